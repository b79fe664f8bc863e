// The demo's reward model, standing in for the paper's IMDb sentiment classifier: VADER's compound
// score (`vader-sentiment`), in [-1, 1]. Higher is more positive; 0 is neutral (or unknown). It is
// bounded, as the paper's reward (a classifier's probability) is: with an unbounded lexicon sum
// (AFINN, used before) more KL kept buying more reward, so no method's reward could level off.
import { createRequire } from 'node:module';
import path from 'node:path';
import packageRoot from '../package-root.cjs';

interface Vader {
  SentimentIntensityAnalyzer: { polarity_scores(text: string): { compound: number } };
}

let vader: Vader | null = null;

export function sentimentScore(text: string): number {
  vader ??= createRequire(path.join(packageRoot, 'package.json'))('vader-sentiment') as Vader;
  return vader.SentimentIntensityAnalyzer.polarity_scores(text).compound;
}
