// The demo's charts: vega-lite specs, rendered to SVG by vega without a browser.
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import * as vega from 'vega';
import { compile, type TopLevelSpec } from 'vega-lite';
import type { EvalPoint } from './experiment.js';
import { averaged } from './summary.js';

const REF = 'πref';
const size = { width: 480, height: 300 };
// One colour per method, the same in every chart.
const SCHEME = ['#4c78a8', '#f58518', '#54a24b', '#b279a2', '#e45756', '#72b7b2'];
const colorOf = (methods: string[]) => ({ field: 'method', type: 'nominal', title: 'method', scale: { domain: methods, range: SCHEME.slice(0, methods.length) } });

/** One line per method over the evaluation points averaged over seeds. */
function lines(title: string, values: object[], encoding: Record<string, unknown>, methods: string[]): TopLevelSpec {
  return { title, ...size, data: { values }, mark: { type: 'line', point: true }, encoding: { ...encoding, color: colorOf(methods) } } as TopLevelSpec;
}

/**
 * The paper's Figure 1: reward against sequence KL for every evaluation point of every seed, not
 * their means, so a reader sees the spread the verdicts must survive. πref (step 0) is one black
 * diamond per seed: the seeds sample it with different seeds.
 */
export function frontierSpec(points: EvalPoint[], methods: string[], reverse = false): TopLevelSpec {
  const seen = new Set<number>();
  const values = points
    .filter((p) => p.step > 0 || (!seen.has(p.seed) && seen.add(p.seed)))
    .map((p) => ({ kl: reverse ? p.sampleReverseKl : p.sampleKl, reward: p.reward, step: p.step, seed: p.seed, group: p.step === 0 ? REF : p.method }));
  const domain = [...methods, REF];
  return {
    title: reverse
      ? 'Reward vs reverse KL(πθ ‖ πref) of samples (mean log-ratio), every evaluation of every seed'
      : 'Reward vs sequence KL(πref ‖ πθ) of samples, every evaluation of every seed',
    ...size,
    data: { values },
    mark: { type: 'point', filled: true, size: 60, opacity: 0.85 },
    encoding: {
      x: { field: 'kl', type: 'quantitative', title: reverse ? 'reverse KL of samples' : 'sequence KL of samples' },
      y: { field: 'reward', type: 'quantitative', title: 'mean sentiment reward', scale: { zero: false } },
      color: { field: 'group', type: 'nominal', title: null, scale: { domain, range: [...SCHEME.slice(0, methods.length), 'black'] } },
      shape: { field: 'group', type: 'nominal', title: null, scale: { domain, range: [...methods.map(() => 'circle'), 'diamond'] } },
    },
  } as TopLevelSpec;
}

/** Held-out accuracy over steps, mean over seeds, ±1 SE of that mean, against chance. */
export function accuracySpec(points: EvalPoint[], methods: string[], evalPairs: number): TopLevelSpec {
  // At step 0 the policy is πref and every pair ties (counted wrong): nothing to show.
  const values = averaged(points, evalPairs)
    .filter((p) => p.step > 0)
    .map((p) => ({ ...p, lo: p.accuracy - p.accuracySe, hi: p.accuracy + p.accuracySe }));
  const x = { field: 'step', type: 'quantitative' };
  const color = colorOf(methods);
  return {
    title: `Implicit-reward accuracy on ${evalPairs} held-out pairs (mean over seeds, ±1 SE)`,
    ...size,
    data: { values },
    layer: [
      { mark: { type: 'line', point: true }, encoding: { x, y: { field: 'accuracy', type: 'quantitative', title: 'accuracy', scale: { domain: [0.4, 1] } }, color } },
      { mark: { type: 'errorbar', ticks: true, thickness: 1.5 }, encoding: { x, y: { field: 'lo', type: 'quantitative', title: 'accuracy' }, y2: { field: 'hi' }, color } },
      { data: { values: [{ chance: 0.5 }] }, mark: { type: 'rule', strokeDash: [4, 4], color: 'gray' }, encoding: { y: { field: 'chance', type: 'quantitative' } } },
    ],
  } as TopLevelSpec;
}

/** The charts' file names, in the report's order. */
export const CHART_FILES = ['frontier.svg', 'frontier-reverse-kl.svg', 'accuracy.svg', 'kl-chosen-rejected.svg', 'kl-margin.svg'] as const;

export function chartSpecs(points: EvalPoint[], methods: string[], evalPairs: number): Array<[string, TopLevelSpec]> {
  const avg = averaged(points, evalPairs).sort((a, b) => a.step - b.step);
  const [frontier, frontierReverse, accuracy, klSides, klMargin] = CHART_FILES;
  return [
    [frontier, frontierSpec(points, methods)],
    [frontierReverse, frontierSpec(points, methods, true)],
    [accuracy, accuracySpec(points, methods, evalPairs)],
    [
      klSides,
      lines(
        'Sequence KL on held-out pairs (solid: chosen, dashed: rejected)',
        avg.flatMap((p) => [{ ...p, side: 'chosen', kl: p.klChosen }, { ...p, side: 'rejected', kl: p.klRejected }]),
        {
          x: { field: 'step', type: 'quantitative' },
          y: { field: 'kl', type: 'quantitative', title: 'sequence KL(πref ‖ πθ)' },
          strokeDash: { field: 'side', type: 'nominal' },
        },
        methods,
      ),
    ],
    [
      klMargin,
      lines('KL margin |KL(rejected) − KL(chosen)| on held-out pairs', avg, {
        x: { field: 'step', type: 'quantitative' },
        y: { field: 'klMargin', type: 'quantitative', title: 'KL margin' },
      }, methods),
    ],
  ];
}

export async function renderSvg(spec: TopLevelSpec): Promise<string> {
  const view = new vega.View(vega.parse(compile(spec).spec), { renderer: 'none' });
  return view.toSVG();
}

export async function writeCharts(dir: string, points: EvalPoint[], methods: string[], evalPairs: number): Promise<string[]> {
  const charts = chartSpecs(points, methods, evalPairs);
  for (const [name, spec] of charts) writeFileSync(path.join(dir, name), await renderSvg(spec));
  return charts.map(([n]) => n);
}
