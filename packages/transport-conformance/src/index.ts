export {
  type ConformanceNamespace,
  type ConformanceOptions,
  describeTransportConformance,
} from './describeTransportConformance.js';
export { waitFor } from './waitFor.js';
