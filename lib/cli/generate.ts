// `tdpo generate --model DIR --prompt TEXT [...]`: sample continuations from a model folder.
import { existsSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { Model, Tokenizer } from '../index.js';
import { CliError, numberOf, positiveInt } from './errors.js';

export const generateHelp = `Usage: tdpo generate --model DIR --prompt TEXT [--prompt TEXT ...] [options]

Prints one JSON line per prompt: {"prompt", "completion"}.

Options:
      --model DIR          a Hugging Face folder (config.json, model.safetensors)
      --tokenizer FILE     tokenizer.json, or 'gpt2'; default DIR/tokenizer.json, else gpt2
  -p, --prompt TEXT        a prompt (repeatable)
      --max-new-tokens N   default 64
      --temperature X      default 1 (0 = greedy)
      --top-p X            default 1
      --top-k N            default 0 (no limit)
      --seed N             default 0
`;

export async function generateCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      model: { type: 'string' },
      tokenizer: { type: 'string' },
      prompt: { type: 'string', short: 'p', multiple: true },
      'max-new-tokens': { type: 'string' },
      temperature: { type: 'string' },
      'top-p': { type: 'string' },
      'top-k': { type: 'string' },
      seed: { type: 'string' },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(generateHelp);
    return 0;
  }
  if (!values.model) throw new CliError('generate needs --model DIR');
  if (!values.prompt?.length) throw new CliError('generate needs at least one --prompt');
  const num = (v: string | undefined, flag: string, fallback: number) => {
    if (v === undefined) return fallback;
    const x = numberOf(v);
    if (!Number.isFinite(x)) throw new CliError(`${flag} must be a number, got '${v}'`);
    return x;
  };
  const tokFile = values.tokenizer ?? path.join(values.model, 'tokenizer.json');
  const tokenizer = values.tokenizer === 'gpt2' || !existsSync(tokFile) ? Tokenizer.gpt2() : Tokenizer.fromFile(tokFile);
  const model = await Model.load(values.model);
  const outs = await model.generate(
    values.prompt.map((p) => tokenizer.encode(p)),
    {
      maxNewTokens: values['max-new-tokens'] !== undefined ? positiveInt(values['max-new-tokens'], '--max-new-tokens') : 64,
      temperature: num(values.temperature, '--temperature', 1),
      topP: num(values['top-p'], '--top-p', 1),
      topK: values['top-k'] !== undefined ? positiveInt(values['top-k'], '--top-k', 0) : 0,
      seed: values.seed !== undefined ? positiveInt(values.seed, '--seed', 0) : 0,
      // As transformers' generate(): the model's own stop ids (generation_config.json, config.json), else the tokenizer's EOS.
      eosTokenId: model.stopTokenIds.length > 0 ? model.stopTokenIds : tokenizer.eosTokenId,
    },
  );
  values.prompt.forEach((p, i) => process.stdout.write(`${JSON.stringify({ prompt: p, completion: tokenizer.decode(outs[i], { skipUnknown: true }) })}\n`));
  model.dispose();
  return 0;
}
