#!/usr/bin/env node
// The example app: `npx cdk synth` / `npx cdk deploy` from infra/cdk.
//
// Context (-c NAME=VALUE):
//   relayHost               lambda (default) or none: without the relay function
//                           and its event source mapping (template.yaml's
//                           RelayHost), for the standalone relay
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
import { RelayHost } from '../lib/outbox-relay';

const app = new App();
const context = (name: string): string | undefined => {
  const value: unknown = app.node.tryGetContext(name);
  return typeof value === 'string' && value !== '' ? value : undefined;
};
// dist/bin -> the repository root.
const repoRoot = path.resolve(__dirname, '..', '..', '..', '..');
const exampleConsumerCodeDir = context('exampleConsumerCodeDir');
const relayHost = context('relayHost') ?? 'lambda';
if (relayHost !== 'lambda' && relayHost !== 'none') {
  throw new Error(`-c relayHost=${relayHost}: must be lambda or none`);
}

new OutboxRelayExampleStack(app, context('stackName') ?? 'OutboxRelay', {
  relayHost: relayHost as RelayHost,
  codeDirectory:
    relayHost === 'lambda'
      ? path.resolve(context('outboxCodeDir') ?? path.join(repoRoot, 'target', 'lambda', 'outbox-lambda'))
      : undefined,
  existingTableName: context('existingTableName'),
  existingTableStreamArn: context('existingTableStreamArn'),
  existingEventBusName: context('existingEventBusName'),
  alarmEmail: context('alarmEmail'),
  exampleConsumerCodeDirectory: exampleConsumerCodeDir && path.resolve(exampleConsumerCodeDir),
  env: { account: process.env.CDK_DEFAULT_ACCOUNT, region: process.env.CDK_DEFAULT_REGION },
  description: 'outbox-relay: DynamoDB stream outbox to EventBridge (infra/cdk)',
});
