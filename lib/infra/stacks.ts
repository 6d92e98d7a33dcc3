import { App, CrossStackReferences, ReferenceStrength, Stack, Tags, Validations, type StackProps } from 'aws-cdk-lib';
import { AwsSolutionsChecks, ServerlessChecks } from 'cdk-nag';
import type { Construct } from 'constructs';
import { ClusterReferences } from './access.ts';
import { KvApi } from './api.ts';
import type { InfraConfig } from './config.ts';
import { ClusterTables, ReplicationQueue } from './data.ts';
import { Monitoring } from './monitoring.ts';
import { NodeFleet } from './node-fleet.ts';
import { ReplicaApply, ReplicaHeartbeatSchedule } from './replica-fleet.ts';

export const stackNames = {
  data: (config: InfraConfig, region: string) => `${config.prefix}-data-${region}`,
  home: (config: InfraConfig) => `${config.prefix}-home-${config.homeRegion}`,
  replica: (config: InfraConfig, region: string) => `${config.prefix}-replica-${region}`,
};

function stackProps(config: InfraConfig, region: string, description: string): StackProps {
  // An explicit region per stack; the account comes from the credentials unless configured.
  return { env: { region, ...(config.account === undefined ? {} : { account: config.account }) }, description };
}

/**
 * A service stack uses its region's tables and queues through CloudFormation exports (strong
 * references): CloudFormation refuses to delete a data stack whose tables are still in use.
 */
function consumeDataStrongly(stack: Stack): void {
  CrossStackReferences.of(stack).consume(ReferenceStrength.STRONG);
}

/**
 * A region's stateful resources, alone in their stack so the stateless stacks can be replaced,
 * renamed or destroyed without touching data: the three tables and the replication queue with
 * its dead-letter queue, in every region — the home region's queue is idle (a queue costs
 * nothing idle), and a promotion (`epochkv promote`) never has to change a data stack.
 */
export class DataStack extends Stack {
  readonly tables: ClusterTables;
  readonly replication: ReplicationQueue;

  constructor(scope: Construct, id: string, props: { config: InfraConfig; region: string }) {
    const { config, region } = props;
    const isHome = region === config.homeRegion;
    super(scope, id, {
      ...stackProps(config, region, `epochkv ${config.prefix}: ${isHome ? 'home' : 'replica'} tables and replication queues in ${region}`),
      terminationProtection: config.deletionProtection,
    });
    this.tables = new ClusterTables(this, 'Tables', { config });
    this.replication = new ReplicationQueue(this, 'Replication', { config });
  }
}

/** The home region: node fleet (with its schedules), the API, monitoring and the cluster dashboard. */
export class HomeStack extends Stack {
  readonly nodes: NodeFleet;
  readonly api: KvApi;
  readonly monitoring: Monitoring;

  constructor(scope: Construct, id: string, props: { config: InfraConfig; data: DataStack }) {
    const { config, data } = props;
    super(scope, id, stackProps(config, config.homeRegion, `epochkv ${config.prefix}: home region (nodes, API, monitoring)`));
    consumeDataStrongly(this);
    const cluster = new ClusterReferences(this, 'Cluster', { config, local: { tables: data.tables.tables } });
    this.nodes = new NodeFleet(this, 'Nodes', { config, cluster });
    this.api = new KvApi(this, 'Api', { config, cluster });
    this.monitoring = new Monitoring(this, 'Monitoring', {
      config,
      functions: [...this.nodes.nodes.map((node) => node.handler), this.api.handler],
      api: this.api.api,
      home: true,
      dashboard: true,
    });
  }
}

/** A replica region: the apply function on the queue, the replica heartbeat, the read API, monitoring. */
export class ReplicaStack extends Stack {
  readonly apply: ReplicaApply;
  readonly heartbeat: ReplicaHeartbeatSchedule;
  readonly api: KvApi;
  readonly monitoring: Monitoring;

  constructor(scope: Construct, id: string, props: { config: InfraConfig; region: string; data: DataStack }) {
    const { config, region, data } = props;
    super(scope, id, stackProps(config, region, `epochkv ${config.prefix}: replica region ${region} (apply, heartbeat, read API, monitoring)`));
    consumeDataStrongly(this);
    const replication = data.replication;
    if (replication === undefined) throw new Error(`the data stack of replica region ${region} has no replication queue`);
    const cluster = new ClusterReferences(this, 'Cluster', { config, local: { tables: data.tables.tables, queue: replication.queue } });
    this.apply = new ReplicaApply(this, 'Apply', { config, cluster, queue: replication.queue });
    this.heartbeat = new ReplicaHeartbeatSchedule(this, 'Heartbeat', { config, cluster });
    this.api = new KvApi(this, 'Api', { config, cluster });
    this.monitoring = new Monitoring(this, 'Monitoring', {
      config,
      functions: [this.apply.handler, this.heartbeat.handler, this.api.handler],
      api: this.api.api,
      replica: { deadLetterQueue: replication.deadLetterQueue },
    });
  }
}

export interface ClusterStacks {
  data: Map<string, DataStack>;
  home: HomeStack;
  replicas: Map<string, ReplicaStack>;
  /** Every stack, data stacks first. */
  all: Stack[];
}

/**
 * The whole cluster in one app: a data stack and a service stack per region. Stacks of different
 * regions share nothing but names by convention; the dependencies below only order `deploy --all`
 * (tables and queues exist before the functions that use them run).
 */
export function buildCluster(app: App, config: InfraConfig): ClusterStacks {
  const data = new Map<string, DataStack>();
  for (const region of [config.homeRegion, ...config.replicaRegions]) {
    data.set(region, new DataStack(app, stackNames.data(config, region), { config, region }));
  }
  const homeData = data.get(config.homeRegion) as DataStack;
  const home = new HomeStack(app, stackNames.home(config), { config, data: homeData });
  const replicas = new Map<string, ReplicaStack>();
  for (const region of config.replicaRegions) {
    const replicaData = data.get(region) as DataStack;
    const replica = new ReplicaStack(app, stackNames.replica(config, region), { config, region, data: replicaData });
    replica.addStackDependency(homeData, 'replica functions read the home log and report to the home control table');
    home.addStackDependency(replicaData, 'writers ship every entry to each replica queue');
    replicas.set(region, replica);
  }
  Tags.of(app).add('epochkv:cluster', config.prefix);
  return { data, home, replicas, all: [...data.values(), home, ...replicas.values()] };
}

/**
 * cdk-nag's rule packs the app must pass: AWS Solutions (security) and Serverless (tracing,
 * failure handling, limits of serverless services).
 */
export function nagPacks(app: App): (AwsSolutionsChecks | ServerlessChecks)[] {
  return [new AwsSolutionsChecks(app, { verbose: true }), new ServerlessChecks(app, { verbose: true })];
}

/**
 * The nag packs as validation plugins of the app: any finding not acknowledged (with a reason,
 * on the construct that carries it) interrupts synthesis.
 */
export function addNagChecks(app: App): void {
  Validations.of(app).addPlugins(...nagPacks(app));
}
