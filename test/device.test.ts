// Models on a CUDA device: the same numbers as on the CPU and in the golden files, or a clear error
// where this libtorch has no CUDA. The CUDA tests run where buildInfo().cuda is true (a build
// against a CUDA libtorch on a machine with a GPU: scripts/device/check.sh). TDPO_TEST_DEVICE=cpu
// runs them against the CPU instead, which checks the tests themselves, not CUDA.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  buildInfo,
  collatePairs,
  cudaPeakBytes,
  loadConfig,
  Model,
  tokenizePair,
  train as trainRun,
  TrainStep,
  type ModelDevice,
  type ModelDtype,
  type TrainConfig,
  type TrainStepOptions,
} from '../lib/index.js';
import { freePort, parityPairLines, readWeights } from './helpers.js';
import { dirOf, golden, llamaGolden, logitError } from './model-fixtures.js';

const dryRun = process.env.TDPO_TEST_DEVICE === 'cpu';
const device = dryRun ? 'cpu' : 'cuda';
const cuda = buildInfo().cuda;
const tmp = mkdtempSync(path.join(tmpdir(), 'tdpo-device-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe('without CUDA', () => {
  it.skipIf(cuda)("device 'cuda' is a clear error", async () => {
    await expect(Model.load(dirOf('gpt2-tiny'), { device: 'cuda' })).rejects.toMatchObject({
      code: 'ERR_TDPO_OPTION',
      message: expect.stringContaining('has no CUDA device'),
    });
    await expect(Model.create(JSON.parse(readFileSync(path.join(dirOf('gpt2-tiny'), 'config.json'), 'utf8')), { device: 'cuda' })).rejects.toMatchObject({
      code: 'ERR_TDPO_OPTION',
    });
  });
  it("a model's device is the one it was given, 'cpu' by default", async () => {
    const config = JSON.parse(readFileSync(path.join(dirOf('gpt2-tiny'), 'config.json'), 'utf8'));
    const [a, b] = [await Model.create(config), await Model.load(dirOf('gpt2-tiny'), { device: 'cpu' })];
    expect([a.device, b.device]).toEqual(['cpu', 'cpu']);
    a.dispose();
    b.dispose();
  });
  it('an unknown device is a clear error', async () => {
    for (const bad of ['tpu', 'cuda:', 'cuda:x', 'cuda:-1', 'cuda:1e3', 'cuda:123456789']) {
      await expect(Model.load(dirOf('gpt2-tiny'), { device: bad as 'cpu' })).rejects.toMatchObject({
        code: 'ERR_TDPO_OPTION',
        message: expect.stringContaining("options.device must be 'cpu', 'cuda' or 'cuda:N'"),
      });
    }
  });
  it.skipIf(cuda)("'cuda:N' without CUDA is a clear error; there is no allocator peak to report", async () => {
    await expect(Model.load(dirOf('gpt2-tiny'), { device: 'cuda:0' })).rejects.toMatchObject({ code: 'ERR_TDPO_OPTION', message: expect.stringContaining('has no CUDA device') });
    expect(cudaPeakBytes(0)).toBeNull();
    expect(() => cudaPeakBytes(-1)).toThrow(expect.objectContaining({ code: 'ERR_TDPO_OPTION' }));
    expect(buildInfo().cudaDevices).toBe(0);
  });
});

describe.skipIf(!cuda && !dryRun)(`on ${device}`, () => {
  const prompts = [Int32Array.from([5, 17, 3]), Int32Array.from([40]), Int32Array.from([8, 9, 10, 11, 12])];

  for (const c of [...golden.cases, ...llamaGolden.cases]) {
    it(`${c.name}: logits match the golden files, with and without padding`, async () => {
      const m = await Model.load(dirOf(c.name), { device });
      expect(m.device).toBe(device);
      const ids = Int32Array.from(c.inputIds);
      const plain = await m.forward(ids, c.shape);
      const V = plain.shape[2];
      expect(logitError(plain.logits, c.logits, V)).toBeLessThan(1e-4);
      const mask = Int32Array.from(c.attentionMask);
      const masked = await m.forward(ids, c.shape, { attentionMask: mask });
      expect(logitError(masked.logits, c.maskedLogits, V, (pos) => mask[pos] === 1)).toBeLessThan(1e-4);
      m.dispose();
    });

    it(`${c.name}: sequence log-probs and greedy generation equal the CPU's`, async () => {
      const cpu = await Model.load(dirOf(c.name));
      const dev = await Model.load(dirOf(c.name), { device });
      const ids = Int32Array.from(c.inputIds);
      const labels = Int32Array.from(ids, (x, i) => (i % c.shape[1] < 2 ? -100 : x));
      const a = await cpu.sequenceLogprobs(ids, c.shape, labels);
      const b = await dev.sequenceLogprobs(ids, c.shape, labels);
      for (let i = 0; i < a.sums.length; i++) expect(b.sums[i]).toBeCloseTo(a.sums[i], 4);
      for (let i = 0; i < a.tokenEntropies.length; i++) expect(b.tokenEntropies[i]).toBeCloseTo(a.tokenEntropies[i], 4);
      // Left-padded prompts of different lengths, the cache, and EOS stopping a row early.
      const options = { temperature: 0, maxNewTokens: 6 };
      const greedy = await cpu.generate(prompts, options);
      expect(await dev.generate(prompts, options)).toEqual(greedy);
      const eos = greedy[0][2];
      expect(await dev.generate(prompts, { ...options, eosTokenId: eos })).toEqual(await cpu.generate(prompts, { ...options, eosTokenId: eos }));
      expect(await dev.generate(prompts, { ...options, useCache: false })).toEqual(greedy);
      cpu.dispose();
      dev.dispose();
    });
  }

  it('sampling with a seed repeats itself', async () => {
    const m = await Model.load(dirOf('gpt2-tiny'), { device });
    const options = { temperature: 1, topK: 20, topP: 0.9, maxNewTokens: 8, seed: 7 };
    expect(await m.generate(prompts, options)).toEqual(await m.generate(prompts, options));
    m.dispose();
  });

  it('bfloat16 runs and stays within bf16 precision of the golden logits', async () => {
    const c = golden.cases.find((x) => x.name === 'pythia-tiny-bf16')!;
    const m = await Model.load(dirOf(c.name), { device, dtype: 'bfloat16' });
    const { logits, shape } = await m.forward(Int32Array.from(c.inputIds), c.shape);
    expect(logitError(logits, c.logits, shape[2])).toBeLessThan(3e-2);
    m.dispose();
  });

  it('Model.create gives the same weights as on the CPU for a seed; save writes the same file', async () => {
    const config = JSON.parse(readFileSync(path.join(dirOf('neox-sequential-sharded'), 'config.json'), 'utf8'));
    const cpu = await Model.create(config, { seed: 11 });
    const dev = await Model.create(config, { seed: 11, device });
    await cpu.save(path.join(tmp, 'cpu'));
    await dev.save(path.join(tmp, 'dev'));
    expect(readFileSync(path.join(tmp, 'dev', 'model.safetensors')).equals(readFileSync(path.join(tmp, 'cpu', 'model.safetensors')))).toBe(true);
    const back = await Model.load(path.join(tmp, 'dev'), { device });
    const ids = Int32Array.from([1, 2, 3, 4, 5, 6]);
    const a = await cpu.forward(ids, [2, 3]);
    const b = await back.forward(ids, [2, 3]);
    expect(logitError(b.logits, a.logits, a.shape[2])).toBeLessThan(1e-4);
    for (const m of [cpu, dev, back]) m.dispose();
  });

  it('concurrent calls on one model and disposal', async () => {
    const c = golden.cases[0];
    const m = await Model.load(dirOf(c.name), { device });
    const ids = Int32Array.from(c.inputIds);
    const outs = await Promise.all([1, 2, 3, 4].map(() => m.forward(ids, c.shape)));
    for (const o of outs) expect(logitError(o.logits, outs[0].logits, o.shape[2])).toBeLessThan(1e-6);
    m.dispose();
    await expect(m.forward(ids, c.shape)).rejects.toMatchObject({ code: 'ERR_TDPO_DISPOSED' });
  });

});

// Training on the device (issue 10): the fused linear loss in libtorch ops, the materialised
// composition, checkpointing, bf16 with float32 masters; the numbers the CPU gives.
/** The largest difference of a tensor's elements over its largest magnitude. */
function worst(a: Map<string, Float32Array>, b: Map<string, Float32Array>): number {
  let out = 0;
  for (const [name, x] of a) {
    const y = b.get(name)!;
    let diff = 0;
    let scale = 0;
    for (let i = 0; i < x.length; i++) {
      diff = Math.max(diff, Math.abs(x[i] - y[i]));
      scale = Math.max(scale, Math.abs(y[i]));
    }
    out = Math.max(out, diff / scale);
  }
  return out;
}

describe.skipIf(!cuda && !dryRun)(`training on ${device}`, () => {
  const V = 96;
  const config = { model_type: 'gpt2', vocab_size: V, n_positions: 32, n_embd: 48, n_layer: 2, n_head: 4 };
  const batch = (seed: number) => {
    let a = seed;
    const next = () => ((a = (a * 1103515245 + 12345) % 2147483648) / 2147483648);
    const toks = (n: number) => Array.from({ length: n }, () => 2 + Math.floor(next() * (V - 2)));
    const o = { maxLength: 32, maxPromptLength: 16, truncationMode: 'keep_start' as const };
    return collatePairs(Array.from({ length: 3 }, () => tokenizePair(toks(5), toks(2 + Math.floor(next() * 6)), toks(2 + Math.floor(next() * 6)), 1, o)));
  };
  // The Llama family's runner on the same steps: grouped-query attention, an untied head (llama)
  // and q/k/v biases (qwen2).
  const llamaFamily = {
    llama: { model_type: 'llama', vocab_size: V, max_position_embeddings: 32, hidden_size: 48, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, intermediate_size: 64, tie_word_embeddings: false },
    qwen2: { model_type: 'qwen2', vocab_size: V, max_position_embeddings: 32, hidden_size: 48, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 1, intermediate_size: 64 },
  };
  const starts = new Map<object, Promise<string>>();
  const startOf = (model: object) => {
    if (!starts.has(model)) {
      starts.set(model, (async () => {
        const dir = path.join(tmp, `train-start-${starts.size}`);
        const m = await Model.create(model, { seed: 11 });
        await m.save(dir);
        m.dispose();
        return dir;
      })());
    }
    return starts.get(model)!;
  };

  /** Three steps from the same weights: the losses and the trained weights. */
  async function train(on: ModelDevice, dtype: ModelDtype, options: TrainStepOptions, name: string, model: object = config) {
    const start = await startOf(model);
    const policy = await Model.load(start, { device: on, dtype });
    // SGD: an update proportional to the gradient, so the comparison measures the gradient (RMSprop's
    // first steps are ~lr * sign(g), which turns rounding-level differences of tiny gradients into
    // full-sized ones).
    const step = await TrainStep.create(policy, { loss: 'tdpo2', optimizer: 'sgd', ...options });
    const losses: number[] = [];
    const entropies: number[] = []; // the policy's, per sequence: the loss's statistics on this device
    for (let i = 0; i < 3; i++) {
      const stats = await step.accumulate(batch(i + 1), 0.5);
      losses.push(stats.loss);
      entropies.push(...stats.chosenEntropy, ...stats.rejectedEntropy);
      await step.accumulate(batch(i + 10), 0.5);
      await step.apply(0.5, 10);
    }
    const out = path.join(tmp, name);
    await policy.save(out);
    policy.dispose();
    return { losses, entropies, weights: readWeights(path.join(out, 'model.safetensors')) };
  }

  it('float32: three TDPO2 steps equal the CPU to 1e-4 (losses and weights)', async () => {
    const cpu = await train('cpu', 'float32', {}, 'cpu-f32');
    const dev = await train(device, 'float32', {}, 'dev-f32');
    for (let i = 0; i < 3; i++) expect(Math.abs(dev.losses[i] - cpu.losses[i]) / cpu.losses[i]).toBeLessThan(1e-4);
    expect(worst(dev.weights, cpu.weights)).toBeLessThan(1e-4);
    expect(cpu.entropies.every((h) => h > 0)).toBe(true);
    expect(worst(new Map([['h', Float32Array.from(dev.entropies)]]), new Map([['h', Float32Array.from(cpu.entropies)]]))).toBeLessThan(1e-4);
    // The steps moved the weights far more than the tolerance.
    expect(worst(cpu.weights, readWeights(path.join(await startOf(config), 'model.safetensors')))).toBeGreaterThan(1e-2);
  });

  for (const [arch, model] of Object.entries(llamaFamily)) {
    it(`${arch}: three TDPO2 steps equal the CPU to 1e-4, fused linear and materialised`, async () => {
      const cpu = await train('cpu', 'float32', {}, `cpu-${arch}`, model);
      for (const fusedLinear of [true, false]) {
        const dev = await train(device, 'float32', { fusedLinear }, `dev-${arch}-${fusedLinear}`, model);
        for (let i = 0; i < 3; i++) expect(Math.abs(dev.losses[i] - cpu.losses[i]) / cpu.losses[i]).toBeLessThan(1e-4);
        expect(worst(dev.weights, cpu.weights)).toBeLessThan(1e-4);
      }
      expect(worst(cpu.weights, readWeights(path.join(await startOf(model), 'model.safetensors')))).toBeGreaterThan(1e-2);
    });
  }

  it('the materialised composition and gradient checkpointing give the fused linear numbers', async () => {
    const fused = await train(device, 'float32', {}, 'dev-fused');
    const materialised = await train(device, 'float32', { fusedLinear: false }, 'dev-materialised');
    const checkpointed = await train(device, 'float32', { gradientCheckpointing: true, chunkMb: 0.01 }, 'dev-checkpointed');
    for (const other of [materialised, checkpointed]) {
      for (let i = 0; i < 3; i++) expect(Math.abs(other.losses[i] - fused.losses[i]) / fused.losses[i]).toBeLessThan(1e-5);
      expect(worst(other.weights, fused.weights)).toBeLessThan(1e-4);
      expect(worst(new Map([['h', Float32Array.from(other.entropies)]]), new Map([['h', Float32Array.from(fused.entropies)]]))).toBeLessThan(1e-4);
    }
  });

  it('bfloat16 with float32 masters: within bf16 precision of the CPU', async () => {
    const cpu = await train('cpu', 'bfloat16', {}, 'cpu-bf16');
    const dev = await train(device, 'bfloat16', {}, 'dev-bf16');
    for (let i = 0; i < 3; i++) expect(Math.abs(dev.losses[i] - cpu.losses[i]) / cpu.losses[i]).toBeLessThan(2e-2);
    expect(worst(dev.weights, cpu.weights)).toBeLessThan(5e-2);
  });

  it.skipIf(dryRun)('running out of GPU memory is ERR_TDPO_OUT_OF_MEMORY, and the step trains on afterwards', async () => {
    const wide = { model_type: 'gpt2', vocab_size: 2 ** 21, n_positions: 512, n_embd: 64, n_layer: 1, n_head: 2 };
    const m = await Model.create(wide, { seed: 1, device });
    try {
      const step = await TrainStep.create(m, { loss: 'tdpo2', optimizer: 'sgd', fusedLinear: false });
      const toks = (n: number, k: number) => Array.from({ length: n }, (_, i) => 2 + ((i * 7919 + k * 104729) % 65530));
      const o = { maxLength: 512, maxPromptLength: 16, truncationMode: 'keep_start' as const };
      // 256 sequences x 509 positions x 2^21 float32 logits: the first [B, T, V] tensor is 1.1 TB,
      // past any one GPU, and fails alone (nothing large stays cached for the tests after this).
      const huge = collatePairs(Array.from({ length: 128 }, (_, k) => tokenizePair(toks(8, k), toks(500, k + 1), toks(500, k + 2), 1, o)));
      await expect(step.accumulate(huge)).rejects.toMatchObject({ code: 'ERR_TDPO_OUT_OF_MEMORY', message: expect.stringContaining('out of memory') });
      const small = collatePairs([tokenizePair(toks(4, 1), toks(6, 2), toks(5, 3), 1, o)]);
      const stats = await step.accumulate(small);
      expect(Number.isFinite(stats.loss)).toBe(true);
      expect(Number.isFinite(await step.apply(1e-3, 10))).toBe(true);
    } finally {
      m.dispose();
    }
  });

  it.skipIf(dryRun)("'cuda:N' picks a device; one that is not there is a clear error; the allocator's peak is reported", async () => {
    const m = await Model.create(config, { seed: 1, device: 'cuda:0' });
    const step = await TrainStep.create(m);
    cudaPeakBytes(0, true);
    await step.accumulate(batch(1));
    await step.apply(1e-3, 10);
    const peak = cudaPeakBytes(0);
    if (peak !== null) expect(peak).toBeGreaterThan(0);
    m.dispose();
    const n = buildInfo().cudaDevices;
    await expect(Model.create(config, { device: `cuda:${n}` })).rejects.toMatchObject({ code: 'ERR_TDPO_OPTION', message: expect.stringContaining(`has ${n} CUDA device`) });
  });
});

// Issue 9 on a GPU: the data-parallel path with CUDA tensors. One GPU allows one NCCL rank (NCCL
// refuses two ranks on one device), so this runs the whole distributed path at world size 1 —
// rendezvous, the broadcast of the policy, bucketed gradient allreduce on the GPU, the metrics'
// allreduce — and checks it trains exactly as the plain run. Two or more GPUs are the same code with
// more ranks (lib/train/distributed.ts).
// The dry run needs Gloo for CPU tensors (a build against PyTorch's CUDA wheel has NCCL alone).
describe.skipIf(!cuda && !(dryRun && buildInfo().distributedBackends.includes('gloo')))(`data parallel on ${device}`, () => {
  it('one rank over c10d (NCCL for CUDA tensors where the build has it) trains as the plain run', async () => {
    const data = path.join(tmp, 'dp.jsonl');
    writeFileSync(data, parityPairLines(24, 5));
    const config = (out: string): TrainConfig =>
      loadConfig(null, [], {
        model: { model_type: 'gpt2', vocab_size: 32, n_positions: 32, n_embd: 32, n_layer: 2, n_head: 4, eos_token_id: 1 },
        data: { train: data, eval: null, format: 'tokenized', eval_size: 4, drop_last: true },
        loss: { name: 'tdpo2', alpha: 0.5, beta: 0.1 },
        device,
        batch_size: 8,
        optimizer: 'rmsprop',
        lr: 1e-3,
        warmup_steps: 0,
        max_length: 16,
        max_prompt_length: 8,
        max_steps: 3,
        eval_every: 3,
        save_every: 0,
        output_dir: path.join(tmp, out),
      } as Partial<TrainConfig>);
    await trainRun(config('dp-plain'));
    const log: string[] = [];
    await trainRun(config('dp-one-rank'), { distributed: { rank: 0, worldSize: 1, masterPort: await freePort() }, log: (l) => log.push(l) });
    const backend = !dryRun && buildInfo().distributedBackends.includes('nccl') ? 'nccl' : 'gloo';
    expect(log.join('\n')).toContain(`(c10d, ${backend})`);
    const metrics = (out: string) => readFileSync(path.join(tmp, out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, number>);
    const [a, b] = [metrics('dp-plain'), metrics('dp-one-rank')];
    expect(b.length).toBe(a.length);
    a.forEach((m, i) => {
      for (const k of ['loss', 'eval/loss', 'rewards/accuracies', 'kl/margin']) {
        if (typeof m[k] === 'number') expect(b[i][k], `${k} at line ${i}`).toBeCloseTo(m[k], 6);
      }
    });
    const w = (out: string) => readWeights(path.join(tmp, out, 'final', 'model.safetensors'));
    expect(worst(w('dp-one-rank'), w('dp-plain'))).toBeLessThan(1e-6);
  });
});
