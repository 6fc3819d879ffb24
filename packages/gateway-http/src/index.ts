export {
  createHttpGateway,
  type HttpGateway,
  type HttpGatewayOptions,
  type HttpGatewayStats,
} from './createHttpGateway.js';
