// The local Cluster helper lives in @qe/test-utils (the chaos suite starts one too).
export { type ClusterShape, type LocalCluster, startCluster } from '@qe/test-utils';
