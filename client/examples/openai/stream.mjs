// Streams a completion from nanoserve-decode's OpenAI-compatible API with
// the official `openai` npm package (pinned in package.json; scripts/setup.sh
// installs it into node_modules/, which git ignores):
//
//   node client/examples/openai/stream.mjs --base_url http://127.0.0.1:8000/v1 \
//       --model random:gpt2 --prompt "Hello" [--max_tokens 16] [--temperature 0] [--json]
//
// Prints the text as it streams; --json prints one JSON object at the end
// instead: {"text", "token_ids", "finish_reason", "usage", "chunks"}.
// --prompt_ids 1,2,3 sends token ids; --ignore_eos and token ids in the
// chunks (return_token_ids) are nanoserve's (and vLLM's) extensions.
import OpenAI from 'openai';

function parseArgs(argv) {
  const args = {base_url: 'http://127.0.0.1:8000/v1', max_tokens: '16', temperature: '0'};
  for (let i = 2; i < argv.length; ++i) {
    const [key, value] = argv[i].replace(/^--/, '').split(/=(.*)/s);
    args[key] = value !== undefined ? value : (argv[i + 1]?.startsWith('--') !== false ? 'true' : argv[++i]);
  }
  return args;
}

const args = parseArgs(process.argv);
const client = new OpenAI({baseURL: args.base_url, apiKey: process.env.OPENAI_API_KEY ?? 'none'});
const request = {
  model: args.model,
  prompt: args.prompt_ids ? args.prompt_ids.split(',').map(Number) : args.prompt,
  max_tokens: Number(args.max_tokens),
  temperature: Number(args.temperature),
  stream: true,
  stream_options: {include_usage: true},
  ignore_eos: args.ignore_eos === 'true',
  return_token_ids: true,
};
if (args.seed !== undefined) request.seed = Number(args.seed);

const result = {text: '', token_ids: [], finish_reason: null, usage: null, chunks: 0};
const stream = await client.completions.create(request);
for await (const chunk of stream) {
  ++result.chunks;
  if (chunk.usage) result.usage = chunk.usage;
  for (const choice of chunk.choices) {
    result.text += choice.text;
    result.token_ids.push(...(choice.token_ids ?? []));
    if (choice.finish_reason) result.finish_reason = choice.finish_reason;
    if (args.json !== 'true') process.stdout.write(choice.text);
  }
}
if (args.json === 'true') {
  console.log(JSON.stringify(result));
} else {
  console.log(`\n[${result.finish_reason}; ${JSON.stringify(result.usage)}]`);
}
