import { makeDynamoClient } from '../adapters/aws/clients.ts';
import { DynamoStore } from '../adapters/aws/dynamo-store.ts';
import { DynamoReplicaStore } from '../adapters/aws/replica-store.ts';
import { Shipper } from '../adapters/aws/replication.ts';
import type { Clock } from '../clock.ts';
import type { ClusterConfig } from '../config.ts';
import { KvService } from './kv-service.ts';

/**
 * The API's service for one region: writes and strong reads against the home tables, the
 * region's own copy for session and eventual reads, and the replica queues to ship to.
 */
export function createRegionService(
  config: ClusterConfig,
  clock: Clock,
  log: (line: string) => void,
  /** TEST ONLY (local cloud): writes without the epoch check, to show the fault suite catches it. */
  unsafe: { disableFencing?: boolean } = {},
  /**
   * Local cloud only: `alive` of the Lambda execution environment the service runs in (see
   * ClientOptions.alive); once it answers false, no client of the service sends anything.
   */
  clients: { alive?: () => boolean } = {},
): { service: KvService; close(): void } {
  const unsafeDisableFencing = config.local && unsafe.disableFencing === true;
  const { alive } = clients;
  const homeClient = makeDynamoClient({ region: config.homeRegion, endpoint: config.dynamoEndpoint, from: config.region, alive, role: 'api' });
  const home = new DynamoStore(homeClient, config.tables, config.shardCount, { unsafeDisableFencing });
  const shipper =
    config.replicaRegions.length === 0 ? undefined : new Shipper({ prefix: config.tablePrefix, regions: config.replicaRegions, endpoint: config.sqsEndpoint, log, from: config.region, alive, role: 'api' });
  let local;
  let localClient: ReturnType<typeof makeDynamoClient> | undefined;
  if (config.region !== config.homeRegion) {
    localClient = makeDynamoClient({ region: config.region, endpoint: config.dynamoEndpoint, alive, role: 'api' });
    local = { store: new DynamoStore(localClient, config.tables, config.shardCount), progress: new DynamoReplicaStore(localClient, config.tables) };
  }
  return {
    // The unsafe test writes itself, unfenced: through the leader its writes would be fenced after all.
    service: new KvService(home, unsafeDisableFencing ? { ...config, writePath: 'direct' } : config, clock, { shipper, local, log }),
    // The local cloud makes and closes a service per Lambda execution environment: free its sockets too.
    close: () => {
      shipper?.destroy();
      homeClient.destroy();
      localClient?.destroy();
    },
  };
}
