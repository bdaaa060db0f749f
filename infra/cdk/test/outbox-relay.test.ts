// Assertions on the synthesized OutboxRelay (node:test, compiled by tsc):
// `npm test`. No Lambda build needed: each stack points the construct at a
// temporary directory holding a placeholder `bootstrap`.
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, describe, test } from 'node:test';

import { App, CfnElement, Duration, Stack } from 'aws-cdk-lib';
import { Capture, Match, Template } from 'aws-cdk-lib/assertions';
import * as dynamodb from 'aws-cdk-lib/aws-dynamodb';
import * as events from 'aws-cdk-lib/aws-events';
import { IConstruct } from 'constructs';

import { OutboxRelayExampleStack } from '../lib/example-stack';
import { EXAMPLE_CONSUMER_SETTINGS, OutboxRelay, OutboxRelayProps, RelayHost } from '../lib/outbox-relay';

const codeDirectory = fs.mkdtempSync(path.join(os.tmpdir(), 'outbox-relay-code-'));
fs.writeFileSync(path.join(codeDirectory, 'bootstrap'), '#!/bin/sh\nexit 1\n', { mode: 0o755 });
after(() => fs.rmSync(codeDirectory, { recursive: true, force: true }));

/** What the function must set: outbox_lambda::all_variables(). */
const RELAY_VARIABLES = [
  'OUTBOX_EVENT_BUS_NAME',
  'OUTBOX_QUARANTINE_QUEUE_URL',
  'OUTBOX_QUARANTINE_MAX_MESSAGE_BYTES',
  'OUTBOX_CLAIM_CHECK_BUCKET',
  'OUTBOX_LARGE_EVENTS',
  'OUTBOX_BUS_FORMAT',
  'OUTBOX_TABLE_NAME',
  'OUTBOX_PARTITION_KEY',
  'OUTBOX_SORT_KEY',
  'OUTBOX_MARKER_ATTRIBUTE',
  'OUTBOX_MAX_REQUEST_BYTES',
  'OUTBOX_MAX_CONCURRENCY',
  'OUTBOX_MAX_RETRIES',
  'OUTBOX_RETRY_BASE_MS',
  'OUTBOX_RETRY_MAX_MS',
  'OUTBOX_DEADLINE_MARGIN_MS',
  'OUTBOX_METRICS_NAMESPACE',
  'OUTBOX_PUT_EVENTS_TIMEOUT_MS',
];

interface Synthesized {
  stack: Stack;
  relay: OutboxRelay;
  template: Template;
  /** Logical id of a construct's CloudFormation resource. */
  id: (c: IConstruct) => string;
}

function synth(
  props: Partial<OutboxRelayProps> = {},
  before?: (stack: Stack) => Partial<OutboxRelayProps>,
): Synthesized {
  const stack = new Stack(new App(), 'Test');
  const relay = new OutboxRelay(stack, 'Relay', { codeDirectory, ...props, ...before?.(stack) });
  const id = (c: IConstruct) => stack.getLogicalId(c.node.defaultChild as CfnElement);
  return { stack, relay, template: Template.fromStack(stack), id };
}

const getAtt = (logicalId: string, attribute: string) => ({ 'Fn::GetAtt': [logicalId, attribute] });
const ref = (logicalId: string) => ({ Ref: logicalId });
/** `<bucket arn>/*`, as CDK writes it. */
const objectsOf = (bucketId: string) => ({ 'Fn::Join': ['', [getAtt(bucketId, 'Arn'), '/*']] });

/** Every IAM statement of the template (roles' inline policies and policy resources). */
function iamStatements(template: Template): Array<Record<string, unknown>> {
  const documents = [
    ...Object.values(template.findResources('AWS::IAM::Policy')).map((r) => r.Properties.PolicyDocument),
    ...Object.values(template.findResources('AWS::IAM::Role')).flatMap((r) =>
      (r.Properties.Policies ?? []).map((p: { PolicyDocument: unknown }) => p.PolicyDocument),
    ),
  ];
  return documents.flatMap((d) => d.Statement);
}

/** The statements granting any S3 action. */
function s3Statements(template: Template): Array<Record<string, unknown>> {
  return iamStatements(template).filter((s) =>
    ([] as unknown[]).concat(s.Action).some((a) => typeof a === 'string' && a.startsWith('s3:')),
  );
}

/**
 * The claim-check bucket, whatever the relay's host: SSE-S3, public access
 * blocked, ACLs off, objects expiring after `retentionDays` and incomplete
 * uploads after a day, retained with its TLS-only policy.
 */
function assertClaimCheckBucket(template: Template, bucketId: string, retentionDays = 14): void {
  template.resourceCountIs('AWS::S3::Bucket', 1);
  template.hasResource('AWS::S3::Bucket', {
    DeletionPolicy: 'Retain',
    UpdateReplacePolicy: 'Retain',
    Properties: {
      BucketEncryption: {
        ServerSideEncryptionConfiguration: [{ ServerSideEncryptionByDefault: { SSEAlgorithm: 'AES256' } }],
      },
      PublicAccessBlockConfiguration: {
        BlockPublicAcls: true,
        BlockPublicPolicy: true,
        IgnorePublicAcls: true,
        RestrictPublicBuckets: true,
      },
      OwnershipControls: { Rules: [{ ObjectOwnership: 'BucketOwnerEnforced' }] },
      LifecycleConfiguration: {
        Rules: [
          {
            Id: 'expire-claim-checks',
            Status: 'Enabled',
            ExpirationInDays: retentionDays,
            AbortIncompleteMultipartUpload: { DaysAfterInitiation: 1 },
          },
        ],
      },
    },
  });
  template.resourceCountIs('AWS::S3::BucketPolicy', 1);
  template.hasResource('AWS::S3::BucketPolicy', {
    DeletionPolicy: 'Retain',
    UpdateReplacePolicy: 'Retain',
    Properties: {
      Bucket: ref(bucketId),
      PolicyDocument: {
        Statement: [
          {
            Effect: 'Deny',
            Principal: { AWS: '*' },
            Action: 's3:*',
            Resource: [getAtt(bucketId, 'Arn'), objectsOf(bucketId)],
            Condition: { Bool: { 'aws:SecureTransport': 'false' } },
          },
        ],
      },
    },
  });
}

describe('OutboxRelay (creating the table and the bus)', () => {
  const { relay, template, id } = synth();
  const tableId = id(relay.table);
  const busId = id(relay.eventBus);
  const functionId = id(relay.function!);
  const quarantineId = id(relay.quarantineQueue);
  const onFailureId = id(relay.onFailureQueue);
  const bucketId = id(relay.claimCheckBucket);

  test('creates one of each resource and four alarms', () => {
    template.resourceCountIs('AWS::DynamoDB::Table', 1);
    template.resourceCountIs('AWS::Events::EventBus', 1);
    template.resourceCountIs('AWS::Events::Rule', 1);
    template.resourceCountIs('AWS::SQS::Queue', 3);
    template.resourceCountIs('AWS::Lambda::Function', 1);
    template.resourceCountIs('AWS::Lambda::EventSourceMapping', 1);
    template.resourceCountIs('AWS::IAM::Role', 1);
    template.resourceCountIs('AWS::S3::Bucket', 1);
    template.resourceCountIs('AWS::S3::BucketPolicy', 1);
    template.resourceCountIs('AWS::CloudWatch::Alarm', 4);
    template.resourceCountIs('AWS::SNS::Topic', 0);
  });

  test('table: on demand, NEW_IMAGE stream, TTL, PITR, deletion protection, retained', () => {
    template.hasResource('AWS::DynamoDB::Table', {
      DeletionPolicy: 'Retain',
      UpdateReplacePolicy: 'Retain',
      Properties: {
        BillingMode: 'PAY_PER_REQUEST',
        KeySchema: [
          { AttributeName: 'pk', KeyType: 'HASH' },
          { AttributeName: 'sk', KeyType: 'RANGE' },
        ],
        AttributeDefinitions: Match.arrayWith([
          { AttributeName: 'pk', AttributeType: 'S' },
          { AttributeName: 'sk', AttributeType: 'S' },
        ]),
        StreamSpecification: { StreamViewType: 'NEW_IMAGE' },
        TimeToLiveSpecification: { AttributeName: 'ttl', Enabled: true },
        PointInTimeRecoverySpecification: { PointInTimeRecoveryEnabled: true },
        DeletionProtectionEnabled: true,
      },
    });
  });

  test('event source mapping: from the trim horizon, partial batch failures, bounded retries', () => {
    template.hasResourceProperties('AWS::Lambda::EventSourceMapping', {
      FunctionName: ref(functionId),
      EventSourceArn: getAtt(tableId, 'StreamArn'),
      StartingPosition: 'TRIM_HORIZON',
      BatchSize: 100,
      MaximumBatchingWindowInSeconds: 1,
      FunctionResponseTypes: ['ReportBatchItemFailures'],
      BisectBatchOnFunctionError: true,
      MaximumRetryAttempts: 10000,
      MaximumRecordAgeInSeconds: 21600,
      ParallelizationFactor: 1,
      DestinationConfig: { OnFailure: { Destination: getAtt(onFailureId, 'Arn') } },
    });
  });

  test('filter: only INSERTs of items whose marker is v1', () => {
    const pattern = new Capture();
    template.hasResourceProperties('AWS::Lambda::EventSourceMapping', {
      FilterCriteria: { Filters: [{ Pattern: pattern }] },
    });
    assert.deepEqual(JSON.parse(pattern.asString()), {
      eventName: ['INSERT'],
      dynamodb: { NewImage: { outbox: { S: ['v1'] } } },
    });
  });

  test('function: provided.al2023 on arm64, JSON logs in its own log group', () => {
    template.hasResourceProperties('AWS::Lambda::Function', {
      Runtime: 'provided.al2023',
      Architectures: ['arm64'],
      Handler: 'bootstrap',
      MemorySize: 256,
      Timeout: 60,
      Role: getAtt(id(relay.role!), 'Arn'),
      LoggingConfig: {
        LogFormat: 'JSON',
        ApplicationLogLevel: 'INFO',
        SystemLogLevel: 'WARN',
        LogGroup: ref(id(relay.logGroup!)),
      },
    });
    template.hasResourceProperties('AWS::Logs::LogGroup', { RetentionInDays: 30 });
  });

  test('environment: exactly the variables the binary reads, wired to the resources', () => {
    const variables = new Capture();
    template.hasResourceProperties('AWS::Lambda::Function', { Environment: { Variables: variables } });
    const env = variables.asObject();
    assert.deepEqual(Object.keys(env).sort(), [...RELAY_VARIABLES].sort());
    assert.deepEqual(env.OUTBOX_EVENT_BUS_NAME, ref(busId));
    assert.deepEqual(env.OUTBOX_QUARANTINE_QUEUE_URL, ref(quarantineId));
    assert.deepEqual(env.OUTBOX_CLAIM_CHECK_BUCKET, ref(bucketId));
    assert.equal(env.OUTBOX_LARGE_EVENTS, 'quarantine', 'large events are quarantined unless asked');
    assert.equal(env.OUTBOX_BUS_FORMAT, 'envelope', 'the envelope is published unless asked');
    // The quarantine's size limit is the queue's own.
    assert.equal(env.OUTBOX_QUARANTINE_MAX_MESSAGE_BYTES, '262144');
    assert.equal(
      String(template.toJSON().Resources[quarantineId].Properties.MaximumMessageSize),
      env.OUTBOX_QUARANTINE_MAX_MESSAGE_BYTES,
    );
    assert.deepEqual(env.OUTBOX_TABLE_NAME, ref(tableId));
    assert.equal(env.OUTBOX_PARTITION_KEY, 'pk');
    assert.equal(env.OUTBOX_MARKER_ATTRIBUTE, 'outbox');
    assert.equal(env.OUTBOX_MAX_REQUEST_BYTES, '262144');
    assert.equal(env.OUTBOX_METRICS_NAMESPACE, 'OutboxRelay');
    assert.equal(env.OUTBOX_PUT_EVENTS_TIMEOUT_MS, '10000');
  });

  test('IAM: five statements, each on the exact ARNs, nothing on *', () => {
    template.hasResourceProperties('AWS::IAM::Role', {
      AssumeRolePolicyDocument: {
        Statement: [{ Action: 'sts:AssumeRole', Effect: 'Allow', Principal: { Service: 'lambda.amazonaws.com' } }],
      },
      ManagedPolicyArns: Match.absent(),
      Policies: Match.absent(),
    });
    template.resourceCountIs('AWS::IAM::Policy', 1);
    template.hasResourceProperties('AWS::IAM::Policy', {
      Roles: [ref(id(relay.role!))],
      PolicyDocument: {
        Statement: Match.arrayEquals([
          {
            Sid: 'WriteOwnLogs',
            Effect: 'Allow',
            Action: ['logs:CreateLogStream', 'logs:PutLogEvents'],
            Resource: getAtt(id(relay.logGroup!), 'Arn'),
          },
          {
            Sid: 'ReadOutboxStream',
            Effect: 'Allow',
            Action: ['dynamodb:DescribeStream', 'dynamodb:GetRecords', 'dynamodb:GetShardIterator', 'dynamodb:ListStreams'],
            Resource: getAtt(tableId, 'StreamArn'),
          },
          { Sid: 'PublishToBus', Effect: 'Allow', Action: 'events:PutEvents', Resource: getAtt(busId, 'Arn') },
          {
            Sid: 'QuarantineAndOnFailure',
            Effect: 'Allow',
            Action: 'sqs:SendMessage',
            Resource: [getAtt(quarantineId, 'Arn'), getAtt(onFailureId, 'Arn')],
          },
          { Sid: 'ClaimCheckObjects', Effect: 'Allow', Action: 's3:PutObject', Resource: objectsOf(bucketId) },
        ]),
      },
    });
    const json = JSON.stringify(template.findResources('AWS::IAM::Policy'));
    assert.doesNotMatch(json, /"\*"/);
  });

  test('IAM: the only S3 grant is s3:PutObject on the claim-check bucket\'s objects', () => {
    assert.deepEqual(s3Statements(template), [
      { Sid: 'ClaimCheckObjects', Effect: 'Allow', Action: 's3:PutObject', Resource: objectsOf(bucketId) },
    ]);
  });

  test('claim-check bucket: SSE-S3, no public access, no ACLs, 14-day expiry, retained, TLS only', () => {
    assertClaimCheckBucket(template, bucketId);
  });

  test('queues: SQS-managed encryption, 14 days retention', () => {
    const queues = template.findResources('AWS::SQS::Queue', {
      Properties: { SqsManagedSseEnabled: true, MessageRetentionPeriod: 1209600 },
    });
    assert.equal(Object.keys(queues).length, 3);
  });

  test('quarantine and on-failure queues: an explicit 256 KiB message size limit', () => {
    const limited = template.findResources('AWS::SQS::Queue', { Properties: { MaximumMessageSize: 262144 } });
    assert.deepEqual(Object.keys(limited).sort(), [quarantineId, onFailureId].sort());
  });

  test('example rule: source com.example.orders to its queue, allowed by a queue policy', () => {
    const queueId = id(relay.exampleTargetQueue!);
    template.hasResourceProperties('AWS::Events::Rule', {
      EventBusName: ref(busId),
      EventPattern: { source: ['com.example.orders'] },
      Targets: [Match.objectLike({ Arn: getAtt(queueId, 'Arn') })],
    });
    template.hasResourceProperties('AWS::SQS::QueuePolicy', {
      Queues: [ref(queueId)],
      PolicyDocument: {
        Statement: [
          Match.objectLike({
            // CDK's SqsQueue target also allows GetQueueAttributes and GetQueueUrl.
            Action: Match.arrayWith(['sqs:SendMessage']),
            Principal: { Service: 'events.amazonaws.com' },
            Condition: { ArnEquals: { 'aws:SourceArn': getAtt(id(relay.exampleRule!), 'Arn') } },
          }),
        ],
      },
    });
  });

  test('alarms: iterator age, function errors, both queues non-empty; no actions without a topic', () => {
    const alarm = (namespace: string, metric: string, statistic: string, threshold: number, dimension: object) =>
      template.hasResourceProperties('AWS::CloudWatch::Alarm', {
        Namespace: namespace,
        MetricName: metric,
        Statistic: statistic,
        Threshold: threshold,
        Period: 60,
        ComparisonOperator: 'GreaterThanThreshold',
        TreatMissingData: 'notBreaching',
        Dimensions: [dimension],
        AlarmActions: Match.absent(),
      });
    alarm('AWS/Lambda', 'IteratorAge', 'Maximum', 60000, { Name: 'FunctionName', Value: ref(functionId) });
    alarm('AWS/Lambda', 'Errors', 'Sum', 0, { Name: 'FunctionName', Value: ref(functionId) });
    for (const queueId of [quarantineId, onFailureId]) {
      alarm('AWS/SQS', 'ApproximateNumberOfMessagesVisible', 'Maximum', 0, {
        Name: 'QueueName',
        Value: getAtt(queueId, 'QueueName'),
      });
    }
    template.hasResourceProperties('AWS::CloudWatch::Alarm', {
      MetricName: 'IteratorAge',
      EvaluationPeriods: 5,
      DatapointsToAlarm: 3,
    });
  });
});

describe('OutboxRelay (options)', () => {
  test('an existing table and bus: neither is created, IAM and the mapping use their ARNs', () => {
    const streamArn = 'arn:aws:dynamodb:eu-west-1:123456789012:table/orders/stream/2026-01-01T00:00:00.000';
    let bus: events.IEventBus | undefined;
    const { stack, template } = synth({}, (s) => {
      bus = events.EventBus.fromEventBusName(s, 'Bus', 'orders-bus');
      return {
        table: dynamodb.Table.fromTableAttributes(s, 'Table', { tableName: 'orders', tableStreamArn: streamArn }),
        eventBus: bus,
      };
    });
    template.resourceCountIs('AWS::DynamoDB::Table', 0);
    template.resourceCountIs('AWS::Events::EventBus', 0);
    template.hasResourceProperties('AWS::Lambda::EventSourceMapping', { EventSourceArn: streamArn });
    template.hasResourceProperties('AWS::IAM::Policy', {
      PolicyDocument: {
        Statement: Match.arrayWith([
          Match.objectLike({ Sid: 'ReadOutboxStream', Resource: streamArn }),
          Match.objectLike({ Sid: 'PublishToBus', Resource: stack.resolve(bus!.eventBusArn) }),
        ]),
      },
    });
    template.hasResourceProperties('AWS::Lambda::Function', {
      Environment: {
        Variables: Match.objectLike({ OUTBOX_TABLE_NAME: 'orders', OUTBOX_EVENT_BUS_NAME: 'orders-bus' }),
      },
    });
  });

  test('a table without a stream ARN is refused', () => {
    assert.throws(
      () => synth({}, (s) => ({ table: dynamodb.Table.fromTableName(s, 'T', 'orders') })),
      /has no stream ARN/,
    );
  });

  test('a code directory without bootstrap is refused with the build command', () => {
    const empty = fs.mkdtempSync(path.join(os.tmpdir(), 'outbox-relay-empty-'));
    try {
      assert.throws(() => synth({ codeDirectory: empty }), /bootstrap not found.*cargo lambda build --release --arm64/);
    } finally {
      fs.rmSync(empty, { recursive: true, force: true });
    }
  });

  test('a custom schema changes the key schema, the filter and the environment', () => {
    const { template } = synth({ schema: { partitionKey: 'PK', sortKey: 'SK', markerAttribute: 'kind' } });
    template.hasResourceProperties('AWS::DynamoDB::Table', {
      KeySchema: [
        { AttributeName: 'PK', KeyType: 'HASH' },
        { AttributeName: 'SK', KeyType: 'RANGE' },
      ],
    });
    template.hasResourceProperties('AWS::Lambda::EventSourceMapping', {
      FilterCriteria: {
        Filters: [
          { Pattern: Match.serializedJson({ eventName: ['INSERT'], dynamodb: { NewImage: { kind: { S: ['v1'] } } } }) },
        ],
      },
    });
    template.hasResourceProperties('AWS::Lambda::Function', {
      Environment: {
        Variables: Match.objectLike({ OUTBOX_PARTITION_KEY: 'PK', OUTBOX_SORT_KEY: 'SK', OUTBOX_MARKER_ATTRIBUTE: 'kind' }),
      },
    });
  });

  test('mapping, function and tuning props reach the template', () => {
    const { template } = synth({
      batchSize: 500,
      maxBatchingWindow: Duration.seconds(0),
      maxRetryAttempts: 3,
      maxRecordAge: Duration.hours(1),
      memorySize: 512,
      timeout: Duration.seconds(30),
      tableDeletionProtection: false,
      exampleRule: false,
      tuning: { maxConcurrency: 8, retryBase: Duration.millis(10), deadlineMargin: Duration.seconds(5) },
    });
    template.hasResourceProperties('AWS::Lambda::EventSourceMapping', {
      BatchSize: 500,
      MaximumBatchingWindowInSeconds: 0,
      MaximumRetryAttempts: 3,
      MaximumRecordAgeInSeconds: 3600,
    });
    template.hasResourceProperties('AWS::Lambda::Function', {
      MemorySize: 512,
      Timeout: 30,
      Environment: {
        Variables: Match.objectLike({
          OUTBOX_MAX_CONCURRENCY: '8',
          OUTBOX_RETRY_BASE_MS: '10',
          OUTBOX_DEADLINE_MARGIN_MS: '5000',
        }),
      },
    });
    template.hasResourceProperties('AWS::DynamoDB::Table', { DeletionProtectionEnabled: false });
    template.resourceCountIs('AWS::Events::Rule', 0);
    template.resourceCountIs('AWS::SQS::Queue', 2);
  });

  test('quarantineMaxMessageBytes sets both queues and the variable; claimCheckRetention the expiry', () => {
    const { relay, template, id } = synth({
      quarantineMaxMessageBytes: 1048576,
      claimCheckRetention: Duration.days(30),
    });
    const limited = template.findResources('AWS::SQS::Queue', { Properties: { MaximumMessageSize: 1048576 } });
    assert.deepEqual(Object.keys(limited).sort(), [id(relay.quarantineQueue), id(relay.onFailureQueue)].sort());
    template.hasResourceProperties('AWS::Lambda::Function', {
      Environment: { Variables: Match.objectLike({ OUTBOX_QUARANTINE_MAX_MESSAGE_BYTES: '1048576' }) },
    });
    assertClaimCheckBucket(template, id(relay.claimCheckBucket), 30);
  });

  test('a claim-check retention shorter than the queues\' or not in whole days is refused', () => {
    for (const retention of [Duration.days(13), Duration.hours(14 * 24 + 1)]) {
      assert.throws(
        () => synth({ claimCheckRetention: retention }),
        /claimCheckRetention must be whole days, at least 14/,
      );
    }
  });

  test('a quarantine message size limit outside SQS\'s range is refused', () => {
    assert.throws(() => synth({ quarantineMaxMessageBytes: 1048577 }), /maximum message size must be between/);
  });

  test('an alarm email creates a topic that every alarm notifies', () => {
    const { relay, template, id } = synth({ alarmEmail: 'ops@example.com' });
    template.resourceCountIs('AWS::SNS::Topic', 1);
    template.hasResourceProperties('AWS::SNS::Subscription', { Protocol: 'email', Endpoint: 'ops@example.com' });
    const topic = ref(id(relay.alarmTopic!));
    const notifying = template.findResources('AWS::CloudWatch::Alarm', {
      Properties: { AlarmActions: [topic], OKActions: [topic] },
    });
    assert.equal(Object.keys(notifying).length, 4);
  });
});

describe('OutboxRelay relayHost', () => {
  /** The resources that exist whatever the relay's host. */
  const assertSharedResources = (template: Template) => {
    template.resourceCountIs('AWS::DynamoDB::Table', 1);
    template.hasResourceProperties('AWS::DynamoDB::Table', { StreamSpecification: { StreamViewType: 'NEW_IMAGE' } });
    template.resourceCountIs('AWS::Events::EventBus', 1);
    template.resourceCountIs('AWS::Events::Rule', 1);
    template.resourceCountIs('AWS::SQS::Queue', 3);
    template.resourceCountIs('AWS::SQS::QueuePolicy', 1);
  };

  test("'lambda' is the default: the function, its mapping, role, log group and four alarms", () => {
    for (const { relay, template, id } of [synth(), synth({ relayHost: 'lambda' })]) {
      assert.equal(relay.relayHost, 'lambda');
      assertSharedResources(template);
      assertClaimCheckBucket(template, id(relay.claimCheckBucket));
      assert.deepEqual(
        s3Statements(template).map((s) => [s.Action, s.Resource]),
        [['s3:PutObject', objectsOf(id(relay.claimCheckBucket))]],
      );
      template.hasResourceProperties('AWS::Lambda::Function', {
        Environment: {
          Variables: Match.objectLike({
            OUTBOX_CLAIM_CHECK_BUCKET: ref(id(relay.claimCheckBucket)),
            OUTBOX_QUARANTINE_MAX_MESSAGE_BYTES: '262144',
          }),
        },
      });
      template.resourceCountIs('AWS::Lambda::Function', 1);
      template.resourceCountIs('AWS::Lambda::EventSourceMapping', 1);
      template.resourceCountIs('AWS::IAM::Role', 1);
      template.resourceCountIs('AWS::IAM::Policy', 1);
      template.resourceCountIs('AWS::Logs::LogGroup', 1);
      template.resourceCountIs('AWS::CloudWatch::Alarm', 4);
      assert.ok(relay.function && relay.eventSourceMapping && relay.role && relay.logGroup);
      assert.ok(relay.alarms.iteratorAge && relay.alarms.functionErrors);
    }
  });

  test("'lambda' without a code directory is refused, naming the build command", () => {
    assert.throws(
      () => synth({ codeDirectory: undefined }),
      /codeDirectory is required with relayHost 'lambda'.*cargo lambda build --release --arm64 -p outbox-lambda/,
    );
  });

  test("'none': no function, mapping, role, policy or log group; the table, bus, rule, queues and queue alarms", () => {
    const { relay, template, id } = synth({ relayHost: 'none', codeDirectory: undefined });
    assert.equal(relay.relayHost, 'none');
    assertSharedResources(template);
    for (const type of [
      'AWS::Lambda::Function',
      'AWS::Lambda::EventSourceMapping',
      'AWS::Lambda::Permission',
      'AWS::IAM::Role',
      'AWS::IAM::Policy',
      'AWS::Logs::LogGroup',
    ]) {
      template.resourceCountIs(type, 0);
    }
    assert.equal(relay.function, undefined);
    assert.equal(relay.eventSourceMapping, undefined);
    assert.equal(relay.role, undefined);
    assert.equal(relay.logGroup, undefined);
    assert.equal(relay.alarms.iteratorAge, undefined);
    assert.equal(relay.alarms.functionErrors, undefined);
    // The queue alarms stay: the standalone relay fills the same queues.
    template.resourceCountIs('AWS::CloudWatch::Alarm', 2);
    for (const queue of [relay.quarantineQueue, relay.onFailureQueue]) {
      template.hasResourceProperties('AWS::CloudWatch::Alarm', {
        Namespace: 'AWS/SQS',
        Dimensions: [{ Name: 'QueueName', Value: getAtt(id(queue), 'QueueName') }],
      });
    }
    const onFunction = template.findResources('AWS::CloudWatch::Alarm', { Properties: { Namespace: 'AWS/Lambda' } });
    assert.deepEqual(onFunction, {});
  });

  test("'none' keeps the claim-check bucket (the standalone relay writes to it) and grants nothing on it", () => {
    const { relay, template, id } = synth({ relayHost: 'none', codeDirectory: undefined });
    assertClaimCheckBucket(template, id(relay.claimCheckBucket));
    assert.deepEqual(s3Statements(template), []);
    // The queues keep their size limit: the standalone relay applies it too.
    const limited = template.findResources('AWS::SQS::Queue', { Properties: { MaximumMessageSize: 262144 } });
    assert.deepEqual(Object.keys(limited).sort(), [id(relay.quarantineQueue), id(relay.onFailureQueue)].sort());
  });

  test("'none' ignores a code directory, and its queue alarms notify the alarm topic", () => {
    const { template, relay, id } = synth({ relayHost: 'none', alarmEmail: 'ops@example.com' });
    template.resourceCountIs('AWS::Lambda::Function', 0);
    const topic = ref(id(relay.alarmTopic!));
    const notifying = template.findResources('AWS::CloudWatch::Alarm', {
      Properties: { AlarmActions: [topic], OKActions: [topic] },
    });
    assert.equal(Object.keys(notifying).length, 2);
  });

  test("'none' with the example consumer: only the consumer's function, no mapping", () => {
    const { relay, template } = synth({
      relayHost: 'none',
      codeDirectory: undefined,
      exampleConsumer: { codeDirectory },
    });
    template.resourceCountIs('AWS::Lambda::Function', 1);
    template.resourceCountIs('AWS::Lambda::EventSourceMapping', 0);
    template.hasResourceProperties('AWS::Lambda::Function', {
      Environment: { Variables: Match.objectLike({ IDEMPOTENCY_TABLE_NAME: Match.anyValue() }) },
    });
    assert.ok(relay.exampleConsumer);
  });

  test('anything else is refused', () => {
    assert.throws(() => synth({ relayHost: 'fargate' as RelayHost }), /relayHost must be 'lambda' or 'none'/);
  });
});

/** What the example consumer must set: the variables outbox-example-consumer reads, less its endpoint override. */
const EXAMPLE_CONSUMER_VARIABLES = ['IDEMPOTENCY_TABLE_NAME', 'CONSUMER_SCOPE', 'IDEMPOTENCY_IN_PROGRESS_SECONDS'];

describe('OutboxRelay with the example consumer', () => {
  const { relay, template, id } = synth({ exampleConsumer: { codeDirectory } });
  const consumer = relay.exampleConsumer!;
  const tableId = id(consumer.table);
  const functionId = id(consumer.function);
  const queueId = id(consumer.deadLetterQueue);
  const ruleId = id(consumer.rule);

  test('is off by default', () => {
    const off = synth();
    assert.equal(off.relay.exampleConsumer, undefined);
    off.template.resourceCountIs('AWS::Lambda::Function', 1);
    off.template.resourceCountIs('AWS::Lambda::EventInvokeConfig', 0);
    off.template.resourceCountIs('AWS::Lambda::Permission', 0);
  });

  test('adds a table, a queue, a function, a role, a rule, a permission, an invoke config and an alarm', () => {
    template.resourceCountIs('AWS::DynamoDB::Table', 2);
    template.resourceCountIs('AWS::SQS::Queue', 4);
    template.resourceCountIs('AWS::Lambda::Function', 2);
    template.resourceCountIs('AWS::IAM::Role', 2);
    template.resourceCountIs('AWS::IAM::Policy', 2);
    template.resourceCountIs('AWS::Logs::LogGroup', 2);
    template.resourceCountIs('AWS::Events::Rule', 2);
    template.resourceCountIs('AWS::Lambda::Permission', 1);
    template.resourceCountIs('AWS::Lambda::EventInvokeConfig', 1);
    template.resourceCountIs('AWS::CloudWatch::Alarm', 5);
    // The relay is unchanged: still one mapping, on the relay function.
    template.resourceCountIs('AWS::Lambda::EventSourceMapping', 1);
    template.hasResourceProperties('AWS::Lambda::EventSourceMapping', { FunctionName: ref(id(relay.function!)) });
  });

  test('idempotency table: pk (S) hash key, TTL on ttl, on demand, SSE, deleted with the stack', () => {
    template.hasResource('AWS::DynamoDB::Table', {
      DeletionPolicy: 'Delete',
      UpdateReplacePolicy: 'Delete',
      Properties: {
        BillingMode: 'PAY_PER_REQUEST',
        KeySchema: [{ AttributeName: 'pk', KeyType: 'HASH' }],
        AttributeDefinitions: [{ AttributeName: 'pk', AttributeType: 'S' }],
        TimeToLiveSpecification: { AttributeName: 'ttl', Enabled: true },
        SSESpecification: { SSEEnabled: true },
        StreamSpecification: Match.absent(),
      },
    });
  });

  test('function: provided.al2023 on arm64, its own log group, exactly the variables the binary reads', () => {
    const variables = new Capture();
    template.hasResourceProperties('AWS::Lambda::Function', {
      Runtime: 'provided.al2023',
      Architectures: ['arm64'],
      Handler: 'bootstrap',
      MemorySize: 128,
      Timeout: 30,
      Role: getAtt(id(consumer.role), 'Arn'),
      LoggingConfig: { LogFormat: 'JSON', LogGroup: ref(id(consumer.logGroup)) },
      Environment: { Variables: variables },
    });
    const env = variables.asObject();
    assert.deepEqual(Object.keys(env).sort(), [...EXAMPLE_CONSUMER_VARIABLES].sort());
    assert.deepEqual(env.IDEMPOTENCY_TABLE_NAME, ref(tableId));
    assert.equal(env.CONSUMER_SCOPE, 'example-consumer');
    // A claim must outlive the attempt that holds it.
    assert.ok(Number(env.IDEMPOTENCY_IN_PROGRESS_SECONDS) >= EXAMPLE_CONSUMER_SETTINGS.timeout.toSeconds());
  });

  test('asynchronous invocations: bounded retries and age, then the dead-letter queue', () => {
    template.hasResourceProperties('AWS::Lambda::EventInvokeConfig', {
      FunctionName: ref(functionId),
      Qualifier: '$LATEST',
      MaximumRetryAttempts: 2,
      MaximumEventAgeInSeconds: 3600,
      DestinationConfig: { OnFailure: { Destination: getAtt(queueId, 'Arn') } },
    });
  });

  test('rule: com.example.orders on the bus to the function, allowed by a permission for that rule only', () => {
    template.hasResourceProperties('AWS::Events::Rule', {
      EventBusName: ref(id(relay.eventBus)),
      EventPattern: { source: ['com.example.orders'] },
      Targets: [Match.objectLike({ Arn: getAtt(functionId, 'Arn') })],
    });
    template.hasResourceProperties('AWS::Lambda::Permission', {
      Action: 'lambda:InvokeFunction',
      FunctionName: getAtt(functionId, 'Arn'),
      Principal: 'events.amazonaws.com',
      SourceArn: getAtt(ruleId, 'Arn'),
    });
  });

  test('IAM: its own log group, PutItem/GetItem/DeleteItem on its table, SendMessage to its queue, GetObject on claim-checked events, nothing on *', () => {
    template.hasResourceProperties('AWS::IAM::Policy', {
      Roles: [ref(id(consumer.role))],
      PolicyDocument: {
        Statement: Match.arrayEquals([
          {
            Sid: 'WriteOwnLogs',
            Effect: 'Allow',
            Action: ['logs:CreateLogStream', 'logs:PutLogEvents'],
            Resource: getAtt(id(consumer.logGroup), 'Arn'),
          },
          {
            Sid: 'IdempotencyRecords',
            Effect: 'Allow',
            Action: ['dynamodb:PutItem', 'dynamodb:GetItem', 'dynamodb:DeleteItem'],
            Resource: getAtt(tableId, 'Arn'),
          },
          { Sid: 'OnFailureDestination', Effect: 'Allow', Action: 'sqs:SendMessage', Resource: getAtt(queueId, 'Arn') },
          {
            Sid: 'ReadClaimCheckedEvents',
            Effect: 'Allow',
            Action: 's3:GetObject',
            Resource: { 'Fn::Join': ['', [getAtt(id(relay.claimCheckBucket), 'Arn'), '/outbox/events/*']] },
          },
        ]),
      },
    });
    assert.doesNotMatch(JSON.stringify(template.findResources('AWS::IAM::Policy')), /"\*"/);
  });

  test('dead-letter queue: encrypted, 14 days, alarmed when not empty', () => {
    template.hasResourceProperties('AWS::SQS::Queue', { SqsManagedSseEnabled: true, MessageRetentionPeriod: 1209600 });
    template.hasResourceProperties('AWS::CloudWatch::Alarm', {
      Namespace: 'AWS/SQS',
      MetricName: 'ApproximateNumberOfMessagesVisible',
      Statistic: 'Maximum',
      Threshold: 0,
      ComparisonOperator: 'GreaterThanThreshold',
      Dimensions: [{ Name: 'QueueName', Value: getAtt(queueId, 'QueueName') }],
    });
  });

  test('its rule follows exampleRuleSource, and its alarm the alarm topic', () => {
    const custom = synth({
      exampleConsumer: { codeDirectory },
      exampleRuleSource: 'com.example.billing',
      alarmEmail: 'ops@example.com',
    });
    const c = custom.relay.exampleConsumer!;
    custom.template.hasResourceProperties('AWS::Events::Rule', {
      EventPattern: { source: ['com.example.billing'] },
      Targets: [Match.objectLike({ Arn: getAtt(custom.id(c.function), 'Arn') })],
    });
    const topic = ref(custom.id(custom.relay.alarmTopic!));
    const notifying = custom.template.findResources('AWS::CloudWatch::Alarm', {
      Properties: { AlarmActions: [topic], OKActions: [topic] },
    });
    assert.equal(Object.keys(notifying).length, 5);
  });

  test('a consumer code directory without bootstrap is refused with its build command', () => {
    const empty = fs.mkdtempSync(path.join(os.tmpdir(), 'outbox-consumer-empty-'));
    try {
      assert.throws(
        () => synth({ exampleConsumer: { codeDirectory: empty } }),
        /OutboxExampleConsumer: .*bootstrap not found.*--features example-lambda --bin outbox-example-consumer/,
      );
    } finally {
      fs.rmSync(empty, { recursive: true, force: true });
    }
  });
});

describe('the example app stack', () => {
  test('synthesizes with an output for everything a user needs', () => {
    const stack = new OutboxRelayExampleStack(new App(), 'Example', { codeDirectory });
    const outputs = Object.keys(Template.fromStack(stack).findOutputs('*')).sort();
    assert.deepEqual(outputs, [
      'AlarmNames',
      'ClaimCheckBucketArn',
      'ClaimCheckBucketName',
      'EventBusArn',
      'EventBusName',
      'EventSourceMappingId',
      'ExampleRuleArn',
      'ExampleTargetQueueUrl',
      'FunctionArn',
      'FunctionName',
      'FunctionRoleArn',
      'LogGroupName',
      'OnFailureQueueArn',
      'OnFailureQueueUrl',
      'QuarantineQueueArn',
      'QuarantineQueueUrl',
      'TableName',
      'TableStreamArn',
    ]);
  });

  test('with the example consumer: its outputs too', () => {
    const stack = new OutboxRelayExampleStack(new App(), 'Example', {
      codeDirectory,
      exampleConsumerCodeDirectory: codeDirectory,
    });
    const outputs = Object.keys(Template.fromStack(stack).findOutputs('*')).filter((o) =>
      o.startsWith('ExampleConsumer'),
    );
    assert.deepEqual(outputs.sort(), [
      'ExampleConsumerAlarmName',
      'ExampleConsumerDeadLetterQueueArn',
      'ExampleConsumerDeadLetterQueueUrl',
      'ExampleConsumerFunctionArn',
      'ExampleConsumerFunctionName',
      'ExampleConsumerIdempotencyTableName',
      'ExampleConsumerRuleArn',
    ]);
  });

  test("with relayHost 'none': no function outputs, two alarm names, no code directory needed", () => {
    const stack = new OutboxRelayExampleStack(new App(), 'Example', { relayHost: 'none' });
    const template = Template.fromStack(stack);
    const outputs = template.findOutputs('*');
    assert.deepEqual(Object.keys(outputs).sort(), [
      'AlarmNames',
      'ClaimCheckBucketArn',
      'ClaimCheckBucketName',
      'EventBusArn',
      'EventBusName',
      'ExampleRuleArn',
      'ExampleTargetQueueUrl',
      'OnFailureQueueArn',
      'OnFailureQueueUrl',
      'QuarantineQueueArn',
      'QuarantineQueueUrl',
      'TableName',
      'TableStreamArn',
    ]);
    const names = JSON.stringify(outputs.AlarmNames.Value);
    const alarmId = (a: IConstruct) => stack.getLogicalId(a.node.defaultChild as CfnElement);
    assert.match(names, new RegExp(alarmId(stack.relay.alarms.quarantineMessages)));
    assert.match(names, new RegExp(alarmId(stack.relay.alarms.onFailureMessages)));
    assert.doesNotMatch(names, /IteratorAge|FunctionErrors/);
  });

  test('refuses half of an existing table', () => {
    assert.throws(
      () => new OutboxRelayExampleStack(new App(), 'Example', { codeDirectory, existingTableName: 'orders' }),
      /both existingTableName and existingTableStreamArn/,
    );
  });
});
