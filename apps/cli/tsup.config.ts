import { defineConfig } from 'tsup';

// One self-contained ESM file: the workspace packages (@qe/*) are bundled from
// their sources, so the built `qe` runs without building them first; npm
// dependencies (commander, ioredis, ws) stay external.
export default defineConfig({
  entry: { main: 'src/main.ts' },
  format: ['esm'],
  splitting: true,
  dts: false,
  clean: true,
  sourcemap: true,
  target: 'node22',
  platform: 'node',
  noExternal: [/^@qe\//],
  external: ['@qe/loadgen'],
  esbuildOptions(options) {
    options.conditions = ['@qe/source', 'import', 'module', 'default'];
  },
});
