#!/usr/bin/env node
// The example app: `npx cdk synth` / `npx cdk deploy` from infra/cdk.
//
// Context (-c NAME=VALUE):
//   outboxCodeDir           directory holding `bootstrap`
//                           (default <repo>/target/lambda/outbox-lambda, built by
//                           `cargo lambda build --release --arm64 -p outbox-lambda`)
//   stackName               default OutboxRelay
//   existingTableName       relay an existing table (with existingTableStreamArn)
//   existingTableStreamArn
//   existingEventBusName    publish to an existing bus
//   alarmEmail              email notified by the alarms
//   exampleConsumerCodeDir  deploy the example consumer (template.yaml's
//                           DeployExampleConsumer=true) from this directory
//                           holding its `bootstrap` (<repo>/target/lambda/
//                           outbox-example-consumer, built by `cargo lambda build
//                           --release --arm64 -p outbox-consumer --features
//                           example-lambda --bin outbox-example-consumer`)
import * as path from 'node:path';

import { App } from 'aws-cdk-lib';

import { OutboxRelayExampleStack } from '../lib/example-stack';

const app = new App();
const context = (name: string): string | undefined => {
  const value: unknown = app.node.tryGetContext(name);
  return typeof value === 'string' && value !== '' ? value : undefined;
};
// dist/bin -> the repository root.
const repoRoot = path.resolve(__dirname, '..', '..', '..', '..');
const exampleConsumerCodeDir = context('exampleConsumerCodeDir');

new OutboxRelayExampleStack(app, context('stackName') ?? 'OutboxRelay', {
  codeDirectory: path.resolve(context('outboxCodeDir') ?? path.join(repoRoot, 'target', 'lambda', 'outbox-lambda')),
  existingTableName: context('existingTableName'),
  existingTableStreamArn: context('existingTableStreamArn'),
  existingEventBusName: context('existingEventBusName'),
  alarmEmail: context('alarmEmail'),
  exampleConsumerCodeDirectory: exampleConsumerCodeDir && path.resolve(exampleConsumerCodeDir),
  env: { account: process.env.CDK_DEFAULT_ACCOUNT, region: process.env.CDK_DEFAULT_REGION },
  description: 'outbox-relay: DynamoDB stream outbox to EventBridge (infra/cdk)',
});
