import { defineConfig } from 'tsup';

// The broker as a program: `node dist/main.js`. Workspace packages resolve to
// their own built `dist/` (turbo builds them first), npm packages from
// node_modules: no TypeScript loader at run time.
export default defineConfig({
  entry: { main: 'src/main.ts', index: 'src/index.ts' },
  format: ['esm'],
  dts: false,
  clean: true,
  sourcemap: true,
  target: 'node22',
});
