export {
  ClientError,
  type ClientEvent,
  type ClientSubscription,
  type EventToPublish,
  publishHttp,
  QEClient,
  type QEClientOptions,
} from './QEClient.js';
