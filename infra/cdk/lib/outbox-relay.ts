// The OutboxRelay construct: the same stack as the repository's template.yaml
// (SAM), with the optional example consumer (OutboxExampleConsumer).
// scripts/deploy-check.sh synthesizes both and compares their settings;
// crates/outbox-lambda/tests/deployment_env.rs checks that the relay
// function's environment (in the OutboxRelay class) names exactly the
// variables the binary reads.
import * as fs from 'node:fs';
import * as path from 'node:path';

import { Duration, RemovalPolicy } from 'aws-cdk-lib';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as cloudwatchActions from 'aws-cdk-lib/aws-cloudwatch-actions';
import * as dynamodb from 'aws-cdk-lib/aws-dynamodb';
import * as events from 'aws-cdk-lib/aws-events';
import * as eventsTargets from 'aws-cdk-lib/aws-events-targets';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as s3 from 'aws-cdk-lib/aws-s3';
import * as sns from 'aws-cdk-lib/aws-sns';
import * as snsSubscriptions from 'aws-cdk-lib/aws-sns-subscriptions';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';

/** How outbox items are stored (README, "The outbox item schema"). */
export interface OutboxItemSchema {
  /** Partition key attribute (S). @default 'pk' */
  readonly partitionKey?: string;
  /** Sort key attribute (S). @default 'sk' */
  readonly sortKey?: string;
  /** Marker attribute (S, value `v1`); the mapping's filter selects on it. @default 'outbox' */
  readonly markerAttribute?: string;
  /** TTL attribute (N, epoch seconds) of a created table. @default 'ttl' */
  readonly ttlAttribute?: string;
}

/** The relay's publishing knobs (the binary's defaults unless set). */
export interface RelayTuning {
  /** Largest PutEvents request in bytes. @default 262144 */
  readonly maxRequestBytes?: number;
  /** Most PutEvents calls in flight per invocation. @default 4 */
  readonly maxConcurrency?: number;
  /** Retries of transient failures within one invocation. @default 6 */
  readonly maxRetries?: number;
  /** Backoff of the first retry. @default 50 ms */
  readonly retryBase?: Duration;
  /** Largest backoff. @default 5 s */
  readonly retryMax?: Duration;
  /** Time kept before the invocation's deadline. @default 2 s */
  readonly deadlineMargin?: Duration;
  /** Longest PutEvents call attempt, answer included (the SDK client's attempt timeout). @default 10 s */
  readonly putEventsTimeout?: Duration;
}

/**
 * Where the relay runs: `lambda` (the relay function and its event source
 * mapping) or `none` (neither, nor what only they need: for the standalone
 * relay, `outbox relay dynamodb`, or a place that cannot run functions).
 */
export type RelayHost = 'lambda' | 'none';

/** Properties of {@link OutboxRelay}. */
export interface OutboxRelayProps {
  /**
   * Where the relay runs, like template.yaml's `RelayHost`. With `none`, the
   * function, its event source mapping, role, log group and the alarms on the
   * function are not created; the table, bus, example rule, queues,
   * claim-check bucket and queue alarms are. @default 'lambda'
   */
  readonly relayHost?: RelayHost;
  /**
   * Directory holding the function's `bootstrap`, as built by
   * `cargo lambda build --release --arm64 -p outbox-lambda`
   * (`<repo>/target/lambda/outbox-lambda`). Checked at synthesis.
   * Required with `relayHost: 'lambda'`; unused with `none`.
   */
  readonly codeDirectory?: string;
  /**
   * An existing outbox table to relay; it must carry its stream ARN
   * (`Table.fromTableAttributes({ tableName, tableStreamArn })`) and the
   * stream must include new images. @default a table is created
   */
  readonly table?: dynamodb.ITable;
  /** Deletion protection of the created table. @default true */
  readonly tableDeletionProtection?: boolean;
  /** An existing bus to publish to. @default a bus is created */
  readonly eventBus?: events.IEventBus;
  /**
   * Form of each event's `detail` on the bus (`OUTBOX_BUS_FORMAT`): the
   * outbox envelope, or a CloudEvents 1.0 structured event (sequence, trace
   * context and metadata as extension attributes). `source`, `detail-type`
   * and `time` are the same in both. @default 'envelope'
   */
  readonly busFormat?: 'envelope' | 'cloudevents';
  /** Create the example rule (events of `exampleRuleSource` to an SQS queue). @default true */
  readonly exampleRule?: boolean;
  /** Source matched by the example rule. @default 'com.example.orders' */
  readonly exampleRuleSource?: string;
  /** Item attribute names. */
  readonly schema?: OutboxItemSchema;
  /** Publishing knobs. */
  readonly tuning?: RelayTuning;
  /**
   * Largest message of the quarantine and on-failure queues in bytes
   * (1024..1048576): their `MaximumMessageSize` and the relay's
   * `OUTBOX_QUARANTINE_MAX_MESSAGE_BYTES`. A record whose message would be
   * larger goes to the claim-check bucket. @default 262144
   */
  readonly quarantineMaxMessageBytes?: number;
  /**
   * What the relay does with an event too large for a `PutEvents` request
   * (`OUTBOX_LARGE_EVENTS`): quarantine it, or publish it by claim-check
   * through the claim-check bucket (consumers need `s3:GetObject` on it).
   * @default 'quarantine'
   */
  readonly largeEvents?: 'quarantine' | 'claim-check';
  /**
   * How long the claim-check bucket keeps each stored record, in whole days;
   * at least the queues' 14-day message retention, so an object outlives the
   * message that names it. @default 14 days
   */
  readonly claimCheckRetention?: Duration;
  /** CloudWatch namespace of the EMF metrics. @default 'OutboxRelay' */
  readonly metricsNamespace?: string;
  /** Function memory (MB). @default 256 */
  readonly memorySize?: number;
  /** Function timeout. @default 60 s */
  readonly timeout?: Duration;
  /** Application log level (JSON logs). @default INFO */
  readonly applicationLogLevel?: lambda.ApplicationLogLevel;
  /** System log level (JSON logs). @default WARN */
  readonly systemLogLevel?: lambda.SystemLogLevel;
  /** Retention of the function's log group. @default one month */
  readonly logRetention?: logs.RetentionDays;
  /** Most stream records per invocation. @default 100 */
  readonly batchSize?: number;
  /** How long to gather records before invoking. @default 1 s */
  readonly maxBatchingWindow?: Duration;
  /**
   * Retries of a failed batch before it goes to the on-failure queue (0..10000). The default, the
   * largest bound, leaves `maxRecordAge` as the retry budget (time, not attempts). @default 10000
   */
  readonly maxRetryAttempts?: number;
  /** Records older than this go to the on-failure queue (60 s..24 h). @default 6 h */
  readonly maxRecordAge?: Duration;
  /** Iterator age alarm threshold. @default 60 s */
  readonly iteratorAgeAlarmThreshold?: Duration;
  /** Topic notified by the alarms. @default none, or a new one if `alarmEmail` is set */
  readonly alarmTopic?: sns.ITopic;
  /** Email subscribed to a new alarm topic (ignored when `alarmTopic` is set). */
  readonly alarmEmail?: string;
  /**
   * Deploy the example idempotent consumer (crate `outbox-consumer`, binary
   * `outbox-example-consumer`) behind a rule for `exampleRuleSource`, like
   * template.yaml's `DeployExampleConsumer=true`. @default not deployed
   */
  readonly exampleConsumer?: ExampleConsumerOptions;
}

/** The example consumer's code; see {@link OutboxExampleConsumer}. */
export interface ExampleConsumerOptions {
  /**
   * Directory holding the consumer's `bootstrap`, as built by
   * `cargo lambda build --release --arm64 -p outbox-consumer --features example-lambda
   * --bin outbox-example-consumer` (`<repo>/target/lambda/outbox-example-consumer`).
   * Checked at synthesis.
   */
  readonly codeDirectory: string;
}

/** Properties of {@link OutboxExampleConsumer}. */
export interface OutboxExampleConsumerProps extends ExampleConsumerOptions {
  /** The bus whose events it consumes. */
  readonly eventBus: events.IEventBus;
  /** Source matched by its rule. @default 'com.example.orders' */
  readonly ruleSource?: string;
  /** Retention of its log group. @default one month */
  readonly logRetention?: logs.RetentionDays;
  /** Application log level (JSON logs). @default INFO */
  readonly applicationLogLevel?: lambda.ApplicationLogLevel;
  /** System log level (JSON logs). @default WARN */
  readonly systemLogLevel?: lambda.SystemLogLevel;
  /** Topic notified by its alarm. @default none */
  readonly alarmTopic?: sns.ITopic;
  /**
   * The relay's claim-check bucket: events published by claim-check are read
   * back whole from `outbox/events/*`. @default no access
   */
  readonly claimCheckBucket?: s3.IBucket;
}

/** The defaults, shared with template.yaml's parameter defaults. */
export const OUTBOX_RELAY_DEFAULTS = {
  partitionKey: 'pk',
  sortKey: 'sk',
  markerAttribute: 'outbox',
  ttlAttribute: 'ttl',
  exampleRuleSource: 'com.example.orders',
  metricsNamespace: 'OutboxRelay',
  maxRequestBytes: 262144,
  quarantineMaxMessageBytes: 262144,
  largeEvents: 'quarantine' as 'quarantine' | 'claim-check',
  busFormat: 'envelope' as 'envelope' | 'cloudevents',
  claimCheckRetention: Duration.days(14),
  maxConcurrency: 4,
  maxRetries: 6,
  retryBase: Duration.millis(50),
  retryMax: Duration.millis(5000),
  deadlineMargin: Duration.millis(2000),
  putEventsTimeout: Duration.millis(10000),
  memorySize: 256,
  timeout: Duration.seconds(60),
  logRetention: logs.RetentionDays.ONE_MONTH,
  batchSize: 100,
  maxBatchingWindow: Duration.seconds(1),
  maxRetryAttempts: 10000,
  maxRecordAge: Duration.hours(6),
  iteratorAgeAlarmThreshold: Duration.seconds(60),
  relayHost: 'lambda' as RelayHost,
} as const;

/** The queues' message retention (the SQS maximum): a claim-check object must outlive its message. */
const QUEUE_RETENTION = Duration.days(14);

/** The marker value of the current outbox item schema. */
export const OUTBOX_SCHEMA_VERSION = 'v1';

/** The example consumer's fixed settings, the same as template.yaml's. */
export const EXAMPLE_CONSUMER_SETTINGS = {
  scope: 'example-consumer',
  memorySize: 128,
  timeout: Duration.seconds(30),
  /** The claim's expiry: at least the function's timeout. */
  inProgressExpiry: Duration.seconds(30),
  /** Lambda's retries of a failed asynchronous invocation (0..2). */
  retryAttempts: 2,
  /** Events older than this go to the dead-letter queue (60 s..6 h). */
  maxEventAge: Duration.hours(1),
} as const;

/** How each function's `bootstrap` is built, and where it lands (under target/lambda). */
const BUILD_RELAY = { command: 'cargo lambda build --release --arm64 -p outbox-lambda', output: 'outbox-lambda' };
const BUILD_EXAMPLE_CONSUMER = {
  command:
    'cargo lambda build --release --arm64 -p outbox-consumer --features example-lambda --bin outbox-example-consumer',
  output: 'outbox-example-consumer',
};

/**
 * The mapping's on-failure destination, without the grant CDK's `SqsDlq`
 * adds (it also allows GetQueueAttributes and GetQueueUrl): the construct
 * allows exactly `sqs:SendMessage` itself.
 */
class OnFailureQueueDestination implements lambda.IEventSourceDlq {
  constructor(private readonly queue: sqs.IQueue) {}

  bind(): lambda.DlqDestinationConfig {
    return { destination: this.queue.queueArn };
  }
}

/**
 * An asynchronous invocation's on-failure destination, without the grant
 * CDK's `SqsDestination` adds (it also allows GetQueueAttributes and
 * GetQueueUrl): the consumer allows exactly `sqs:SendMessage` itself.
 */
class InvocationFailureQueueDestination implements lambda.IDestination {
  constructor(private readonly queue: sqs.IQueue) {}

  bind(): lambda.DestinationConfig {
    return { destination: this.queue.queueArn };
  }
}

/** A one-minute alarm on `metric` above `threshold`, notifying `topic` if any. */
function alarmAbove(
  scope: Construct,
  id: string,
  description: string,
  metric: cloudwatch.IMetric,
  threshold: number,
  topic: sns.ITopic | undefined,
  window: { evaluationPeriods: number; datapointsToAlarm?: number } = { evaluationPeriods: 1 },
): cloudwatch.Alarm {
  const alarm = new cloudwatch.Alarm(scope, id, {
    alarmDescription: description,
    metric,
    threshold,
    ...window,
    comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
    treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
  });
  if (topic) {
    alarm.addAlarmAction(new cloudwatchActions.SnsAction(topic));
    alarm.addOkAction(new cloudwatchActions.SnsAction(topic));
  }
  return alarm;
}

/**
 * `lambda.Code.fromAsset(directory)` after checking that the directory holds
 * a `bootstrap` (the provided runtimes run `bootstrap`; inline code is not
 * allowed for them); the error names the command that builds it.
 */
function codeFromDirectory(
  owner: string,
  directory: string,
  build: { command: string; output: string },
): lambda.Code {
  const bootstrap = path.join(directory, 'bootstrap');
  if (!fs.existsSync(bootstrap) || !fs.statSync(bootstrap).isFile()) {
    throw new Error(
      `${owner}: ${bootstrap} not found; build it with \`${build.command}\` (output in target/lambda/${build.output})`,
    );
  }
  return lambda.Code.fromAsset(directory);
}

/**
 * The outbox relay: a Rust Lambda function (crate `outbox-lambda`) fed by a
 * DynamoDB stream event source mapping that only passes outbox inserts,
 * publishing to an EventBridge bus, quarantining to SQS, with an on-failure
 * queue, a claim-check bucket for records too large for a queue message, a
 * least-privilege role and alarms. With `relayHost: 'none'`, the same without
 * the function and what only it needs.
 */
export class OutboxRelay extends Construct {
  /** The outbox table (created or given). */
  readonly table: dynamodb.ITable;
  /** The stream the relay reads. */
  readonly tableStreamArn: string;
  /** The bus (created or given). */
  readonly eventBus: events.IEventBus;
  /** The example rule, if created. */
  readonly exampleRule?: events.Rule;
  /** The example rule's target queue, if created. */
  readonly exampleTargetQueue?: sqs.Queue;
  /** Quarantined events with their reason. */
  readonly quarantineQueue: sqs.Queue;
  /** Batches that exhausted the mapping's (or the standalone relay's) retries or age. */
  readonly onFailureQueue: sqs.Queue;
  /**
   * Records too large for a quarantine or on-failure message, one object
   * each (the relay's `OUTBOX_CLAIM_CHECK_BUCKET`); created with either
   * `relayHost`, retained when the stack is deleted.
   */
  readonly claimCheckBucket: s3.Bucket;
  /** Where the relay runs. */
  readonly relayHost: RelayHost;
  /** The function's log group (JSON logs), with `relayHost: 'lambda'`. */
  readonly logGroup?: logs.LogGroup;
  /** The function's role, with `relayHost: 'lambda'`. */
  readonly role?: iam.Role;
  /** The relay function, with `relayHost: 'lambda'`. */
  readonly function?: lambda.Function;
  /** The stream to function mapping, with `relayHost: 'lambda'`. */
  readonly eventSourceMapping?: lambda.EventSourceMapping;
  /** The alarms' topic, if any. */
  readonly alarmTopic?: sns.ITopic;
  /** The example consumer, if deployed (`exampleConsumer`). */
  readonly exampleConsumer?: OutboxExampleConsumer;
  /**
   * Quarantine and on-failure queue depth; iterator age and function errors
   * with `relayHost: 'lambda'`.
   */
  readonly alarms: {
    readonly iteratorAge?: cloudwatch.Alarm;
    readonly functionErrors?: cloudwatch.Alarm;
    readonly quarantineMessages: cloudwatch.Alarm;
    readonly onFailureMessages: cloudwatch.Alarm;
  };

  constructor(scope: Construct, id: string, props: OutboxRelayProps) {
    super(scope, id);
    const d = OUTBOX_RELAY_DEFAULTS;
    this.relayHost = props.relayHost ?? d.relayHost;
    if (this.relayHost !== 'lambda' && this.relayHost !== 'none') {
      throw new Error(`OutboxRelay: relayHost must be 'lambda' or 'none', not '${String(this.relayHost)}'`);
    }
    const schema = {
      partitionKey: props.schema?.partitionKey ?? d.partitionKey,
      sortKey: props.schema?.sortKey ?? d.sortKey,
      markerAttribute: props.schema?.markerAttribute ?? d.markerAttribute,
      ttlAttribute: props.schema?.ttlAttribute ?? d.ttlAttribute,
    };
    const tuning = props.tuning ?? {};

    // ---------------------------------------------------------------- table
    if (props.table) {
      if (!props.table.tableStreamArn) {
        throw new Error(
          'OutboxRelay: the given table has no stream ARN; import it with ' +
            'Table.fromTableAttributes({ tableName, tableStreamArn }) (a NEW_IMAGE or NEW_AND_OLD_IMAGES stream)',
        );
      }
      this.table = props.table;
      this.tableStreamArn = props.table.tableStreamArn;
    } else {
      const table = new dynamodb.Table(this, 'Table', {
        partitionKey: { name: schema.partitionKey, type: dynamodb.AttributeType.STRING },
        sortKey: { name: schema.sortKey, type: dynamodb.AttributeType.STRING },
        billingMode: dynamodb.BillingMode.PAY_PER_REQUEST,
        // The relay decodes the new image of each inserted outbox item.
        stream: dynamodb.StreamViewType.NEW_IMAGE,
        timeToLiveAttribute: schema.ttlAttribute,
        pointInTimeRecoverySpecification: { pointInTimeRecoveryEnabled: true },
        deletionProtection: props.tableDeletionProtection ?? true,
        removalPolicy: RemovalPolicy.RETAIN,
      });
      this.table = table;
      this.tableStreamArn = table.tableStreamArn!;
    }

    // ---------------------------------------------------------------- bus and example rule
    this.eventBus = props.eventBus ?? new events.EventBus(this, 'Bus');
    if (props.exampleRule ?? true) {
      this.exampleTargetQueue = new sqs.Queue(this, 'ExampleTargetQueue', {
        encryption: sqs.QueueEncryption.SQS_MANAGED,
        retentionPeriod: Duration.days(14),
      });
      this.exampleRule = new events.Rule(this, 'ExampleRule', {
        description: 'Example consumer rule; replace with your own.',
        eventBus: this.eventBus,
        eventPattern: { source: [props.exampleRuleSource ?? d.exampleRuleSource] },
        targets: [new eventsTargets.SqsQueue(this.exampleTargetQueue)],
      });
    }

    // ---------------------------------------------------------------- queues
    const quarantineMaxMessageBytes = props.quarantineMaxMessageBytes ?? d.quarantineMaxMessageBytes;
    this.quarantineQueue = new sqs.Queue(this, 'QuarantineQueue', {
      encryption: sqs.QueueEncryption.SQS_MANAGED,
      retentionPeriod: QUEUE_RETENTION,
      maxMessageSizeBytes: quarantineMaxMessageBytes,
    });
    this.onFailureQueue = new sqs.Queue(this, 'OnFailureQueue', {
      encryption: sqs.QueueEncryption.SQS_MANAGED,
      retentionPeriod: QUEUE_RETENTION,
      // The standalone relay writes its on-failure messages in the
      // quarantine's format, with the same size limit.
      maxMessageSizeBytes: quarantineMaxMessageBytes,
    });

    // ---------------------------------------------------------------- claim check
    // Records whose quarantine or on-failure message would exceed
    // quarantineMaxMessageBytes, one object per record; the message then
    // carries the reason, the stream position and the object's address. The
    // function and the standalone relay both use it, so it exists with either
    // relayHost. It and its policy are retained when the stack is deleted:
    // quarantined records outlive the stack.
    const claimCheckRetention = props.claimCheckRetention ?? d.claimCheckRetention;
    const retentionDays = claimCheckRetention.toDays({ integral: false });
    if (!Number.isInteger(retentionDays) || retentionDays < QUEUE_RETENTION.toDays()) {
      throw new Error(
        `OutboxRelay: claimCheckRetention must be whole days, at least ${QUEUE_RETENTION.toDays()} ` +
          `(the queues' message retention), not ${claimCheckRetention.toHumanString()}`,
      );
    }
    this.claimCheckBucket = new s3.Bucket(this, 'ClaimCheckBucket', {
      // SSE-S3 (the relay also asks for it on each PutObject). S3 Bucket Keys
      // only reduce KMS requests, so they do not apply.
      encryption: s3.BucketEncryption.S3_MANAGED,
      blockPublicAccess: s3.BlockPublicAccess.BLOCK_ALL,
      objectOwnership: s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
      enforceSSL: true,
      lifecycleRules: [
        {
          id: 'expire-claim-checks',
          expiration: claimCheckRetention,
          abortIncompleteMultipartUploadAfter: Duration.days(1),
        },
      ],
      removalPolicy: RemovalPolicy.RETAIN,
    });
    // Keep the TLS-only policy on the retained bucket.
    this.claimCheckBucket.policy?.applyRemovalPolicy(RemovalPolicy.RETAIN);

    // ---------------------------------------------------------------- the function (relayHost 'lambda')
    // Everything from here to the alarms exists only where the relay runs as
    // a function; with relayHost 'none' the standalone relay reads the stream.
    if (this.relayHost === 'lambda') {
      if (props.codeDirectory === undefined) {
        throw new Error(
          "OutboxRelay: codeDirectory is required with relayHost 'lambda' " +
            `(the function's bootstrap, built by \`${BUILD_RELAY.command}\`)`,
        );
      }
      // -------------------------------------------------------------- role (least privilege)
      const logGroup = new logs.LogGroup(this, 'LogGroup', {
        retention: props.logRetention ?? d.logRetention,
        removalPolicy: RemovalPolicy.DESTROY,
      });
      const role = new iam.Role(this, 'Role', {
        description: 'outbox-relay function (least privilege)',
        assumedBy: new iam.ServicePrincipal('lambda.amazonaws.com'),
      });
      role.addToPrincipalPolicy(
        new iam.PolicyStatement({
          sid: 'WriteOwnLogs',
          actions: ['logs:CreateLogStream', 'logs:PutLogEvents'],
          resources: [logGroup.logGroupArn],
        }),
      );
      role.addToPrincipalPolicy(
        new iam.PolicyStatement({
          sid: 'ReadOutboxStream',
          actions: [
            'dynamodb:DescribeStream',
            'dynamodb:GetRecords',
            'dynamodb:GetShardIterator',
            'dynamodb:ListStreams',
          ],
          resources: [this.tableStreamArn],
        }),
      );
      role.addToPrincipalPolicy(
        new iam.PolicyStatement({
          sid: 'PublishToBus',
          actions: ['events:PutEvents'],
          resources: [this.eventBus.eventBusArn],
        }),
      );
      // The function quarantines; the mapping's on-failure destination sends
      // with the function's role.
      role.addToPrincipalPolicy(
        new iam.PolicyStatement({
          sid: 'QuarantineAndOnFailure',
          actions: ['sqs:SendMessage'],
          resources: [this.quarantineQueue.queueArn, this.onFailureQueue.queueArn],
        }),
      );
      // Records too large for a queue message: new objects only (no read,
      // list or delete). Not bucket.grantPut, which also allows the object
      // lock, tagging and multipart abort actions.
      role.addToPrincipalPolicy(
        new iam.PolicyStatement({
          sid: 'ClaimCheckObjects',
          actions: ['s3:PutObject'],
          resources: [this.claimCheckBucket.arnForObjects('*')],
        }),
      );

      // -------------------------------------------------------------- function
      const fn = new lambda.Function(this, 'Function', {
        description: 'outbox relay (DynamoDB stream to EventBridge)',
        code: OutboxRelay.codeFromDirectory(props.codeDirectory),
        handler: 'bootstrap',
        runtime: lambda.Runtime.PROVIDED_AL2023,
        architecture: lambda.Architecture.ARM_64,
        memorySize: props.memorySize ?? d.memorySize,
        timeout: props.timeout ?? d.timeout,
        role,
        logGroup,
        loggingFormat: lambda.LoggingFormat.JSON,
        applicationLogLevelV2: props.applicationLogLevel ?? lambda.ApplicationLogLevel.INFO,
        systemLogLevelV2: props.systemLogLevel ?? lambda.SystemLogLevel.WARN,
        // Exactly the variables outbox_lambda::all_variables() names
        // (crates/outbox-lambda/tests/deployment_env.rs).
        environment: {
          OUTBOX_EVENT_BUS_NAME: this.eventBus.eventBusName,
          OUTBOX_BUS_FORMAT: props.busFormat ?? d.busFormat,
          OUTBOX_QUARANTINE_QUEUE_URL: this.quarantineQueue.queueUrl,
          OUTBOX_QUARANTINE_MAX_MESSAGE_BYTES: String(quarantineMaxMessageBytes),
          OUTBOX_CLAIM_CHECK_BUCKET: this.claimCheckBucket.bucketName,
          OUTBOX_LARGE_EVENTS: props.largeEvents ?? d.largeEvents,
          OUTBOX_TABLE_NAME: this.table.tableName,
          OUTBOX_PARTITION_KEY: schema.partitionKey,
          OUTBOX_SORT_KEY: schema.sortKey,
          OUTBOX_MARKER_ATTRIBUTE: schema.markerAttribute,
          OUTBOX_MAX_REQUEST_BYTES: String(tuning.maxRequestBytes ?? d.maxRequestBytes),
          OUTBOX_MAX_CONCURRENCY: String(tuning.maxConcurrency ?? d.maxConcurrency),
          OUTBOX_MAX_RETRIES: String(tuning.maxRetries ?? d.maxRetries),
          OUTBOX_RETRY_BASE_MS: String((tuning.retryBase ?? d.retryBase).toMilliseconds()),
          OUTBOX_RETRY_MAX_MS: String((tuning.retryMax ?? d.retryMax).toMilliseconds()),
          OUTBOX_DEADLINE_MARGIN_MS: String((tuning.deadlineMargin ?? d.deadlineMargin).toMilliseconds()),
          OUTBOX_METRICS_NAMESPACE: props.metricsNamespace ?? d.metricsNamespace,
          OUTBOX_PUT_EVENTS_TIMEOUT_MS: String((tuning.putEventsTimeout ?? d.putEventsTimeout).toMilliseconds()),
        },
      });

      // -------------------------------------------------------------- event source mapping
      // A plain mapping rather than DynamoEventSource, which grants stream read
      // with dynamodb:ListStreams on every resource.
      const eventSourceMapping = new lambda.EventSourceMapping(this, 'EventSourceMapping', {
        target: fn,
        eventSourceArn: this.tableStreamArn,
        startingPosition: lambda.StartingPosition.TRIM_HORIZON,
        batchSize: props.batchSize ?? d.batchSize,
        maxBatchingWindow: props.maxBatchingWindow ?? d.maxBatchingWindow,
        // The handler reports the first record it neither delivered nor
        // quarantined; Lambda resumes from there.
        reportBatchItemFailures: true,
        bisectBatchOnError: true,
        retryAttempts: props.maxRetryAttempts ?? d.maxRetryAttempts,
        maxRecordAge: props.maxRecordAge ?? d.maxRecordAge,
        // Per-aggregate order: outbox items are written in their aggregate's
        // partition, and a stream shard delivers them in commit order. With a
        // factor of 1 each shard has one batch in flight, and a batch that fails
        // at record N is retried from N before anything later is checkpointed, so
        // no event is published before the relay has seen every earlier one of its
        // aggregate (the bus itself may still reorder; consumers order by
        // `sequence`). A factor > 1 runs several batches of one
        // shard at once, ordered only per partition key value: events written
        // under another partition (event_in_partition) could overtake each other.
        parallelizationFactor: 1,
        // Invoke only for outbox inserts: aggregate writes, updates and TTL
        // deletions never reach the function.
        filters: [
          lambda.FilterCriteria.filter({
            eventName: lambda.FilterRule.isEqual('INSERT'),
            dynamodb: {
              NewImage: { [schema.markerAttribute]: { S: lambda.FilterRule.isEqual(OUTBOX_SCHEMA_VERSION) } },
            },
          }),
        ],
        onFailure: new OnFailureQueueDestination(this.onFailureQueue),
      });
      this.logGroup = logGroup;
      this.role = role;
      this.function = fn;
      this.eventSourceMapping = eventSourceMapping;
    }

    // ---------------------------------------------------------------- alarms
    if (props.alarmTopic) {
      this.alarmTopic = props.alarmTopic;
    } else if (props.alarmEmail) {
      const topic = new sns.Topic(this, 'AlarmTopic');
      topic.addSubscription(new snsSubscriptions.EmailSubscription(props.alarmEmail));
      this.alarmTopic = topic;
    }
    const minute = Duration.minutes(1);
    const above = (
      id: string,
      description: string,
      metric: cloudwatch.IMetric,
      threshold: number,
      window?: { evaluationPeriods: number; datapointsToAlarm?: number },
    ) => alarmAbove(this, id, description, metric, threshold, this.alarmTopic, window);
    const fn = this.function;
    this.alarms = {
      iteratorAge:
        fn &&
        above(
          'IteratorAgeAlarm',
          'The relay is falling behind the outbox stream.',
          fn.metric('IteratorAge', { statistic: 'Maximum', period: minute }),
          (props.iteratorAgeAlarmThreshold ?? d.iteratorAgeAlarmThreshold).toMilliseconds(),
          { evaluationPeriods: 5, datapointsToAlarm: 3 },
        ),
      functionErrors:
        fn &&
        above(
          'FunctionErrorsAlarm',
          'The relay function failed whole invocations (configuration, crash, timeout).',
          fn.metricErrors({ statistic: 'Sum', period: minute }),
          0,
        ),
      quarantineMessages: above(
        'QuarantineMessagesAlarm',
        'Events were quarantined (poison or undeliverable); inspect the quarantine queue.',
        this.quarantineQueue.metricApproximateNumberOfMessagesVisible({ statistic: 'Maximum', period: minute }),
        0,
      ),
      onFailureMessages: above(
        'OnFailureMessagesAlarm',
        'Stream records exhausted their retries or age; the on-failure queue names their shard and sequence range, for outbox replay.',
        this.onFailureQueue.metricApproximateNumberOfMessagesVisible({ statistic: 'Maximum', period: minute }),
        0,
      ),
    };

    // ---------------------------------------------------------------- example consumer
    if (props.exampleConsumer) {
      this.exampleConsumer = new OutboxExampleConsumer(this, 'ExampleConsumer', {
        ...props.exampleConsumer,
        eventBus: this.eventBus,
        ruleSource: props.exampleRuleSource ?? d.exampleRuleSource,
        logRetention: props.logRetention ?? d.logRetention,
        applicationLogLevel: props.applicationLogLevel,
        systemLogLevel: props.systemLogLevel,
        alarmTopic: this.alarmTopic,
        claimCheckBucket: this.claimCheckBucket,
      });
    }
  }

  /**
   * `lambda.Code.fromAsset(directory)` after checking that the directory
   * holds a `bootstrap` (the provided runtimes run `bootstrap`; inline code is
   * not allowed for them).
   */
  static codeFromDirectory(directory: string): lambda.Code {
    return codeFromDirectory('OutboxRelay', directory, BUILD_RELAY);
  }
}

/**
 * The example idempotent consumer (crate `outbox-consumer`, binary
 * `outbox-example-consumer`), template.yaml's `DeployExampleConsumer=true`:
 * a function behind a rule on the bus that handles each outbox event at most
 * once per event id, with its idempotency table, bounded asynchronous retries
 * and an on-failure dead-letter queue (its own, not the relay's on-failure
 * queue: that one holds stream positions to replay, this one whole events),
 * a least-privilege role and an alarm on the queue.
 */
export class OutboxExampleConsumer extends Construct {
  /** One record per event id (`pk` = `<scope>#<event id>`, TTL on `ttl`). */
  readonly table: dynamodb.Table;
  /** Events the function gave up on (Lambda invocation records). */
  readonly deadLetterQueue: sqs.Queue;
  /** The function's log group (JSON logs). */
  readonly logGroup: logs.LogGroup;
  /** The function's role. */
  readonly role: iam.Role;
  /** The consumer function. */
  readonly function: lambda.Function;
  /** The rule that invokes it. */
  readonly rule: events.Rule;
  /** Messages in the dead-letter queue. */
  readonly deadLetterAlarm: cloudwatch.Alarm;

  constructor(scope: Construct, id: string, props: OutboxExampleConsumerProps) {
    super(scope, id);
    const settings = EXAMPLE_CONSUMER_SETTINGS;

    this.table = new dynamodb.Table(this, 'IdempotencyTable', {
      partitionKey: { name: 'pk', type: dynamodb.AttributeType.STRING },
      billingMode: dynamodb.BillingMode.PAY_PER_REQUEST,
      timeToLiveAttribute: 'ttl',
      encryption: dynamodb.TableEncryption.AWS_MANAGED,
      removalPolicy: RemovalPolicy.DESTROY,
    });
    this.deadLetterQueue = new sqs.Queue(this, 'DeadLetterQueue', {
      encryption: sqs.QueueEncryption.SQS_MANAGED,
      retentionPeriod: Duration.days(14),
    });
    this.logGroup = new logs.LogGroup(this, 'LogGroup', {
      retention: props.logRetention ?? OUTBOX_RELAY_DEFAULTS.logRetention,
      removalPolicy: RemovalPolicy.DESTROY,
    });

    this.role = new iam.Role(this, 'Role', {
      description: 'outbox-relay example consumer (least privilege)',
      assumedBy: new iam.ServicePrincipal('lambda.amazonaws.com'),
    });
    this.role.addToPrincipalPolicy(
      new iam.PolicyStatement({
        sid: 'WriteOwnLogs',
        actions: ['logs:CreateLogStream', 'logs:PutLogEvents'],
        resources: [this.logGroup.logGroupArn],
      }),
    );
    // IdempotentConsumer::process: claim (conditional PutItem), read a refused
    // claim's record (GetItem), store the result (PutItem), release a failed
    // claim (DeleteItem).
    this.role.addToPrincipalPolicy(
      new iam.PolicyStatement({
        sid: 'IdempotencyRecords',
        actions: ['dynamodb:PutItem', 'dynamodb:GetItem', 'dynamodb:DeleteItem'],
        resources: [this.table.tableArn],
      }),
    );
    // The on-failure destination sends with the function's role.
    this.role.addToPrincipalPolicy(
      new iam.PolicyStatement({
        sid: 'OnFailureDestination',
        actions: ['sqs:SendMessage'],
        resources: [this.deadLetterQueue.queueArn],
      }),
    );
    // resolve_claim_check: events the relay published by claim-check
    // (largeEvents 'claim-check') are read back whole from the bucket.
    if (props.claimCheckBucket) {
      this.role.addToPrincipalPolicy(
        new iam.PolicyStatement({
          sid: 'ReadClaimCheckedEvents',
          actions: ['s3:GetObject'],
          resources: [props.claimCheckBucket.arnForObjects('outbox/events/*')],
        }),
      );
    }

    this.function = new lambda.Function(this, 'Function', {
      description: 'outbox-relay example idempotent consumer (EventBridge rule target)',
      code: codeFromDirectory('OutboxExampleConsumer', props.codeDirectory, BUILD_EXAMPLE_CONSUMER),
      handler: 'bootstrap',
      runtime: lambda.Runtime.PROVIDED_AL2023,
      architecture: lambda.Architecture.ARM_64,
      memorySize: settings.memorySize,
      timeout: settings.timeout,
      role: this.role,
      logGroup: this.logGroup,
      loggingFormat: lambda.LoggingFormat.JSON,
      applicationLogLevelV2: props.applicationLogLevel ?? lambda.ApplicationLogLevel.INFO,
      systemLogLevelV2: props.systemLogLevel ?? lambda.SystemLogLevel.WARN,
      environment: {
        IDEMPOTENCY_TABLE_NAME: this.table.tableName,
        CONSUMER_SCOPE: settings.scope,
        IDEMPOTENCY_IN_PROGRESS_SECONDS: String(settings.inProgressExpiry.toSeconds()),
      },
      // EventBridge invokes asynchronously: bounded retries (an `InProgress`
      // duplicate comes back after the first delivery finished), then the
      // dead-letter queue.
      retryAttempts: settings.retryAttempts,
      maxEventAge: settings.maxEventAge,
      onFailure: new InvocationFailureQueueDestination(this.deadLetterQueue),
    });

    this.rule = new events.Rule(this, 'Rule', {
      description: "The example idempotent consumer's events.",
      eventBus: props.eventBus,
      eventPattern: { source: [props.ruleSource ?? OUTBOX_RELAY_DEFAULTS.exampleRuleSource] },
      targets: [new eventsTargets.LambdaFunction(this.function)],
    });

    this.deadLetterAlarm = alarmAbove(
      this,
      'DeadLetterAlarm',
      'The example consumer gave up on events; inspect its dead-letter queue.',
      this.deadLetterQueue.metricApproximateNumberOfMessagesVisible({
        statistic: 'Maximum',
        period: Duration.minutes(1),
      }),
      0,
      props.alarmTopic,
    );
  }
}
