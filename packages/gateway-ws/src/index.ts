export {
  createWebSocketGateway,
  type WebSocketGateway,
  type WebSocketGatewayOptions,
  type WebSocketGatewayStats,
} from './createWebSocketGateway.js';
export { CLIENT_OPS, type ClientMessage } from './protocol.js';
