// The example stack: one OutboxRelay (with the example consumer if its code
// directory is given) and an output for everything a user needs, like
// template.yaml's Outputs.
import { CfnOutput, Stack, StackProps } from 'aws-cdk-lib';
import * as dynamodb from 'aws-cdk-lib/aws-dynamodb';
import * as events from 'aws-cdk-lib/aws-events';
import { Construct } from 'constructs';

import { OutboxRelay, OutboxRelayProps, RelayHost } from './outbox-relay';

/** Properties of {@link OutboxRelayExampleStack}. */
export interface OutboxRelayExampleStackProps extends StackProps {
  /** Where the relay runs (template.yaml's `RelayHost`). @default 'lambda' */
  readonly relayHost?: RelayHost;
  /** Directory holding the function's `bootstrap` (required with `relayHost: 'lambda'`). */
  readonly codeDirectory?: string;
  /** Relay this existing table (both or neither). */
  readonly existingTableName?: string;
  /** Stream ARN of `existingTableName`. */
  readonly existingTableStreamArn?: string;
  /** Publish to this existing bus. */
  readonly existingEventBusName?: string;
  /** Email notified by the alarms. */
  readonly alarmEmail?: string;
  /**
   * Directory holding the example consumer's `bootstrap`: deploys the example
   * consumer (template.yaml's `DeployExampleConsumer=true`). @default not deployed
   */
  readonly exampleConsumerCodeDirectory?: string;
  /** Anything else of the construct. */
  readonly relay?: Partial<
    Omit<OutboxRelayProps, 'relayHost' | 'codeDirectory' | 'table' | 'eventBus' | 'alarmEmail' | 'exampleConsumer'>
  >;
}

/** A stack holding one {@link OutboxRelay}. */
export class OutboxRelayExampleStack extends Stack {
  /** The relay. */
  readonly relay: OutboxRelay;

  constructor(scope: Construct, id: string, props: OutboxRelayExampleStackProps) {
    super(scope, id, props);
    if (!props.existingTableName !== !props.existingTableStreamArn) {
      throw new Error('set both existingTableName and existingTableStreamArn, or neither');
    }
    const table = props.existingTableName
      ? dynamodb.Table.fromTableAttributes(this, 'ExistingTable', {
          tableName: props.existingTableName,
          tableStreamArn: props.existingTableStreamArn,
        })
      : undefined;
    const eventBus = props.existingEventBusName
      ? events.EventBus.fromEventBusName(this, 'ExistingBus', props.existingEventBusName)
      : undefined;
    const relay = new OutboxRelay(this, 'OutboxRelay', {
      ...props.relay,
      relayHost: props.relayHost,
      codeDirectory: props.codeDirectory,
      table,
      eventBus,
      alarmEmail: props.alarmEmail,
      exampleConsumer: props.exampleConsumerCodeDirectory
        ? { codeDirectory: props.exampleConsumerCodeDirectory }
        : undefined,
    });
    this.relay = relay;

    const out = (id: string, value: string, description?: string) => new CfnOutput(this, id, { value, description });
    out('TableName', relay.table.tableName, 'The outbox table (write events with outbox_dynamodb’s writer).');
    out('TableStreamArn', relay.tableStreamArn, 'The stream the relay reads.');
    out('EventBusName', relay.eventBus.eventBusName, 'The bus events are published to.');
    out('EventBusArn', relay.eventBus.eventBusArn);
    if (relay.exampleRule && relay.exampleTargetQueue) {
      out('ExampleRuleArn', relay.exampleRule.ruleArn);
      out('ExampleTargetQueueUrl', relay.exampleTargetQueue.queueUrl, 'Receives what the example rule matches.');
    }
    if (relay.function && relay.role && relay.logGroup && relay.eventSourceMapping) {
      out('FunctionName', relay.function.functionName);
      out('FunctionArn', relay.function.functionArn);
      out('FunctionRoleArn', relay.role.roleArn);
      out('LogGroupName', relay.logGroup.logGroupName);
      out('EventSourceMappingId', relay.eventSourceMapping.eventSourceMappingId);
    }
    out('QuarantineQueueUrl', relay.quarantineQueue.queueUrl, 'Quarantined events with their reason.');
    out('QuarantineQueueArn', relay.quarantineQueue.queueArn);
    out('OnFailureQueueUrl', relay.onFailureQueue.queueUrl, 'Batches that exhausted the mapping’s retries.');
    out('OnFailureQueueArn', relay.onFailureQueue.queueArn);
    out(
      'ClaimCheckBucketName',
      relay.claimCheckBucket.bucketName,
      'Records too large for a queue message, one object each (the standalone relay’s OUTBOX_CLAIM_CHECK_BUCKET).',
    );
    out('ClaimCheckBucketArn', relay.claimCheckBucket.bucketArn);
    if (relay.alarmTopic) {
      out('AlarmTopicArn', relay.alarmTopic.topicArn);
    }
    const alarms = relay.alarms;
    out(
      'AlarmNames',
      [alarms.iteratorAge, alarms.functionErrors, alarms.quarantineMessages, alarms.onFailureMessages]
        .flatMap((a) => (a ? [a.alarmName] : []))
        .join(','),
    );
    const consumer = relay.exampleConsumer;
    if (consumer) {
      out('ExampleConsumerFunctionName', consumer.function.functionName);
      out('ExampleConsumerFunctionArn', consumer.function.functionArn);
      out('ExampleConsumerIdempotencyTableName', consumer.table.tableName, 'The example consumer’s idempotency records.');
      out('ExampleConsumerRuleArn', consumer.rule.ruleArn);
      out(
        'ExampleConsumerDeadLetterQueueUrl',
        consumer.deadLetterQueue.queueUrl,
        'Events the example consumer gave up on (Lambda invocation records).',
      );
      out('ExampleConsumerDeadLetterQueueArn', consumer.deadLetterQueue.queueArn);
      out('ExampleConsumerAlarmName', consumer.deadLetterAlarm.alarmName);
    }
  }
}
