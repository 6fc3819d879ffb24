export {
  createGrpcGateway,
  type GrpcGateway,
  type GrpcGatewayOptions,
  type GrpcGatewayStats,
} from './createGrpcGateway.js';
export { EVENT_BUS_PROTO, EVENT_BUS_SERVICE, HEALTH_PROTO, HEALTH_SERVICE, PROTO_DIR } from './proto.js';
export { ERROR_CODE_KEY, ERROR_DETAILS_KEY, GRPC_STATUS, RETRY_AFTER_KEY } from './status.js';
