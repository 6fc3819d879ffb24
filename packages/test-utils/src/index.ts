export { type ClusterShape, type LocalCluster, startCluster } from './cluster.js';
export { exited, type FixtureOptions, startFixture } from './process.js';
export {
  deletePrefix,
  REDIS_URL,
  type RedisProcess,
  startProxy,
  startRedis,
  type TcpProxy,
  uniquePrefix,
  waitForPort,
} from './redis.js';
export { type TestCertificate, testCertificate } from './tls.js';
export { deferred, type QuiescentOptions, quiescent, sleep, until, waitFor } from './wait.js';
