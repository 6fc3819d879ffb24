// The assertions (expect) live in the kit: every case it registers checks this transport.
import { MemoryBroker, MemoryTransport } from '@qe/core';
import { describeTransportConformance } from '../src/index.js';

describeTransportConformance({
  name: 'memory',
  capabilities: new MemoryTransport().capabilities,
  async setup() {
    const broker = new MemoryBroker();
    return { createTransport: () => new MemoryTransport({ broker }) };
  },
});
