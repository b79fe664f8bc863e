// The loss bench's child process: one (implementation, pass) case, so that its peak RSS is its
// own. Run as `node --expose-gc dist/esm/bench/loss-child.js SPEC`; prints the result as JSON.
import { runCase, type LossBenchConfig } from './loss-bench.js';

const spec = JSON.parse(process.argv[2] ?? '{}') as { config: LossBenchConfig; implementation: 'fused' | 'reference'; grad: boolean };
// No top-level await: this file is compiled to CommonJS too.
void runCase(spec.config, spec.implementation, spec.grad).then((result) => process.stdout.write(`${JSON.stringify(result)}\n`));
