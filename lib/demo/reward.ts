// The demo's reward model: AFINN-165 word valences through the `sentiment` package, standing in
// for the paper's IMDb sentiment classifier. Higher is more positive; 0 is neutral (or unknown).
import { createRequire } from 'node:module';
import path from 'node:path';
import packageRoot from '../package-root.cjs';

interface SentimentAnalyzer {
  analyze(text: string): { score: number; comparative: number };
}

let analyzer: SentimentAnalyzer | null = null;

export function sentimentScore(text: string): number {
  if (!analyzer) {
    const Sentiment = createRequire(path.join(packageRoot, 'package.json'))('sentiment') as new () => SentimentAnalyzer;
    analyzer = new Sentiment();
  }
  return analyzer.analyze(text).score;
}
