// `temper generate --model DIR [--adapter DIR] --prompt TEXT | --prompt-file FILE [--chat [--chat-template FILE|TEMPLATE]] [--max-new-tokens N]
//  [--greedy | --temperature T --top-p P --top-k K --min-p M --seed S] [--repetition-penalty R]
//  [--frequency-penalty F] [--presence-penalty P] [--json | --json-schema FILE] [--generation-config auto|none]`:
// streams one prompt's continuation to the console (sampling defaults from generation_config.json, see
// GenerationConfig; flags override them field by field); several --prompt values run as one left-padded batch. --graph decodes one
// prompt through the CUDA graph decoder (Temper's CUDA kernels, bf16 weights, an adapter merged first).
// --json constrains the continuation to a JSON object and --json-schema FILE to JSON matching the schema
// (structured output: Temper.Models.Constrained), ending with EOS once the value is complete.
// --speculative ngram|draft [--draft-model DIR] [--num-speculative-tokens K] [--ngram-max N --ngram-min M]
// decodes one prompt speculatively (SpeculativeFlags.cs) and prints the acceptance and tokens/s to stderr.
using System.CommandLine;
using System.Text.Json.Nodes;
using Temper.Core;
using Temper.Models;
using Temper.Models.Constrained;
using Temper.Models.Text;

namespace Temper.Cli.Commands;

internal static class GenerateCommand
{
    internal sealed class SamplingFlags
    {
        public readonly Option<bool> Greedy = new("--greedy") { Description = "Argmax decoding (the default unless a sampling option is given or generation_config.json has do_sample true)" };
        public readonly Option<float?> Temperature = new("--temperature") { Description = "Sampling temperature" };
        public readonly Option<float?> TopP = new("--top-p") { Description = "Nucleus sampling mass" };
        public readonly Option<int?> TopK = new("--top-k") { Description = "Keep the K most likely tokens" };
        public readonly Option<float?> MinP = new("--min-p") { Description = "Drop tokens below min-p x the top probability" };
        public readonly Option<float?> RepetitionPenalty = new("--repetition-penalty") { Description = "HF repetition penalty (1 = off; default generation_config.json's, else 1)" };
        public readonly Option<float> FrequencyPenalty = new("--frequency-penalty") { Description = "Subtract F x its count so far from each generated token's logit (OpenAI's; -2..2, 0 = off)" };
        public readonly Option<float> PresencePenalty = new("--presence-penalty") { Description = "Subtract P from the logit of each token generated so far (OpenAI's; -2..2, 0 = off)" };
        public readonly Option<ulong> Seed = new("--seed") { Description = "Random seed", DefaultValueFactory = _ => 0UL };
        public readonly Option<int?> MaxNewTokens = new("--max-new-tokens") { Description = "Tokens to generate at most (default generation_config.json's max_new_tokens, else 128)" };
        public readonly Option<string[]> Stop = new("--stop") { Description = "Stop when the text contains this string (repeatable)", AllowMultipleArgumentsPerToken = false };
        public readonly Option<bool> IgnoreEos = new("--ignore-eos") { Description = "Run to --max-new-tokens even after EOS" };
        public readonly Option<int> MinNewTokens = new("--min-new-tokens") { Description = "Generate at least this many tokens: EOS cannot be picked and stop strings do not stop before (transformers' min_new_tokens)" };
        public readonly Option<string> GenerationConfigFlag = new("--generation-config")
        {
            Description = "auto: the model's generation_config.json gives the sampling defaults (do_sample, temperature, top_p, top_k, min_p, repetition_penalty, max_new_tokens) the flags leave unset, as transformers and vLLM apply it; none: ignore them (its stop ids still apply)",
            DefaultValueFactory = _ => "auto",
        };

        public void AddTo(Command c)
        {
            foreach (Option o in new Option[] { Greedy, Temperature, TopP, TopK, MinP, RepetitionPenalty, FrequencyPenalty, PresencePenalty, Seed, MaxNewTokens, MinNewTokens, Stop, IgnoreEos, GenerationConfigFlag }) c.Add(o);
        }

        public GenerationOptions Read(ParseResult p, LanguageModel lm)
        {
            bool sampling = p.GetValue(Temperature) != null || p.GetValue(TopP) != null || p.GetValue(TopK) != null || p.GetValue(MinP) != null;
            if (sampling && p.GetValue(Greedy)) throw new TemperException("--greedy cannot be combined with --temperature/--top-p/--top-k/--min-p");
            var file = p.GetValue(GenerationConfigFlag) switch
            {
                "auto" => lm.Generation,
                "none" => null,
                var v => throw new TemperException($"--generation-config must be auto or none, not '{v}'"),
            };
            // The file's defaults first (greedy, or sampling with its values), then each flag given overrides its field.
            var s = new SamplingOptions { FrequencyPenalty = p.GetValue(FrequencyPenalty), PresencePenalty = p.GetValue(PresencePenalty), Seed = p.GetValue(Seed) };
            if (file != null) s = file.Defaults(s);
            if (p.GetValue(Greedy)) s = s with { Greedy = true };
            else if (sampling)
            {
                var from = s.Greedy ? new SamplingOptions() : s; // flags over a greedy file: the unset fields are off, as without a file
                s = s with
                {
                    Greedy = false,
                    Temperature = p.GetValue(Temperature) ?? from.Temperature,
                    TopP = p.GetValue(TopP) ?? from.TopP,
                    TopK = p.GetValue(TopK) ?? from.TopK,
                    MinP = p.GetValue(MinP) ?? from.MinP,
                };
            }
            if (p.GetValue(RepetitionPenalty) is { } rp) s = s with { RepetitionPenalty = rp };
            s.Validate();
            if (file?.FieldsSet() is { Count: > 0 } set)
                Console.Error.WriteLine($"generation_config.json: {string.Join(", ", set)} (flags override; --generation-config none ignores it)");
            return new GenerationOptions
            {
                MaxNewTokens = p.GetValue(MaxNewTokens) ?? file?.MaxNewTokens ?? 128,
                Sampling = s,
                EosIds = lm.EosIds(),
                StopStrings = p.GetValue(Stop) ?? [],
                IgnoreEos = p.GetValue(IgnoreEos),
                MinNewTokens = p.GetValue(MinNewTokens),
            };
        }
    }

    public static Command Create()
    {
        var model = CliOptions.Model();
        var adapter = CliOptions.Adapter();
        var threads = CliOptions.Threads();
        var prompt = new Option<string[]>("--prompt", "-p") { Description = "Prompt text (repeat for a batch)" };
        var promptFile = new Option<string[]>("--prompt-file", "-f") { Description = "Read a prompt from this UTF-8 file, or standard input for - (repeatable; after the --prompt ones)" };
        var chat = new Option<bool>("--chat") { Description = "Wrap the prompt as a user message with the chat template" };
        var kwargs = CliOptions.ChatTemplateKwargs();
        var chatTemplate = CliOptions.ChatTemplate();
        var qlora = CliOptions.QLora();
        var graph = new Option<bool>("--graph") { Description = "Decode on CUDA device 0 through Temper's CUDA kernels, one captured CUDA graph a token (one prompt; bf16 weights; an --adapter is merged first)" };
        var json = new Option<bool>("--json") { Description = "Constrain the output to a JSON object (OpenAI's response_format json_object)" };
        var jsonSchema = new Option<string?>("--json-schema") { Description = "Constrain the output to JSON matching the JSON Schema in this file (response_format json_schema)" };
        var flags = new SamplingFlags();
        var speculative = new SpeculativeFlags();
        var cmd = new Command("generate", "Generate text from a prompt") { model, adapter, threads, prompt, promptFile, chat, kwargs, chatTemplate, qlora, graph, json, jsonSchema };
        flags.AddTo(cmd);
        speculative.AddTo(cmd);
        cmd.SetGuardedAction(p =>
        {
            string[] texts = [.. p.GetValue(prompt) ?? [], .. (p.GetValue(promptFile) ?? []).Select(ReadPrompt)];
            if (texts.Length == 0) throw new TemperException("give a prompt: --prompt TEXT or --prompt-file FILE (- for standard input)");
            if (p.GetValue(kwargs) != null && !p.GetValue(chat)) throw new TemperException("--chat-template-kwargs is for --chat");
            if (p.GetValue(chatTemplate) != null && !p.GetValue(chat)) throw new TemperException("--chat-template is for --chat");
            var template = CliOptions.ChatTemplateOverride(p, chatTemplate, model); // a template that does not parse is refused before the model loads
            var chatOptions = new ChatPromptOptions { TemplateKwargs = CliOptions.TemplateKwargs(p, kwargs) }; // a malformed value is refused before the model loads
            string? schema = ReadSchema(p.GetValue(jsonSchema), p.GetValue(json)); // so is a bad schema
            if (speculative.Check(p) is { } method)
            {
                if (p.GetValue(graph)) throw new TemperException("--graph cannot take --speculative: the CUDA graph decoder runs one token a step and its KV cache does not roll back");
                if (texts.Length != 1) throw new TemperException($"--speculative decodes one prompt at a time (got {texts.Length})");
                if (method == "draft" && (p.GetValue(json) || schema != null)) throw new TemperException("--speculative draft cannot be combined with --json/--json-schema: the draft model proposes without the constraint (--speculative ngram can)");
            }
            if (p.GetValue(graph))
            {
                if (p.GetValue(qlora)) throw new TemperException("--graph decodes bf16 weights; it cannot take --qlora");
                if (texts.Length != 1) throw new TemperException("--graph decodes one --prompt at a time");
                if (p.GetValue(flags.Stop) is { Length: > 0 }) throw new TemperException("--graph does not take --stop (EOS and --max-new-tokens end a run)");
                if (File.Exists(Path.Combine(p.GetValue(model)!, "config.json")))
                    ModelConfig.Load(p.GetValue(model)!).RefuseMoe("the CUDA graph decoder (--graph, TEMPER_DEVICE_CUDA)"); // before a device is opened
            }
            using var lm = p.GetValue(graph)
                ? LanguageModel.Load(p.GetValue(model)!, new Temper.Kernels.Cpu.CpuBackend(p.GetValue(threads)), p.GetValue(adapter), mergeAdapter: true, weightDType: DType.BF16)
                : CliOptions.LoadModel(p, model, adapter, threads, qlora);
            if (template != null) lm.Template = template;
            var tok = lm.RequireTokenizer();
            var opts = flags.Read(p, lm);
            var (spec, draft) = speculative.Read(p, lm);
            using var ownedDraft = draft;
            opts = opts with { Speculative = spec };
            if (p.GetValue(json) || schema != null)
            {
                var vocab = TokenVocabulary.From(tok, opts.EosIds);
                var constraint = schema == null ? JsonConstraint.ForObject(vocab) : JsonConstraint.ForSchema(vocab, schema);
                opts = opts with { Sampling = opts.Sampling with { Constraint = constraint } };
            }
            var prompts = texts.Select(t => (IReadOnlyList<int>)(p.GetValue(chat)
                ? tok.Encode(ChatPrompt.Render(lm.RequireTemplate(), new JsonArray(new JsonObject { ["role"] = "user", ["content"] = t }), chatOptions))
                : tok.Encode(t))).ToList();
            var gen = new Generator(lm.Decoder, ids => tok.Decode(ids, skipSpecialTokens: true));
            using var cancel = new CancellationTokenSource();
            Console.CancelKeyPress += (_, e) => { e.Cancel = true; cancel.Cancel(); };
            if (prompts.Count == 1)
            {
                var stream = new StreamingText(tok);
                Console.Out.Write(texts[0]);
                void Print(int _, int id) => Console.Out.Write(stream.Push(id));
                GenerationResult r;
                var clock = System.Diagnostics.Stopwatch.StartNew();
                if (p.GetValue(graph))
                {
                    using var device = CliOptions.OpenCudaDevice("--graph decodes");
                    using var decodeGraph = GraphDecoding.Build(device, lm.Config, lm.Weights, rows: 1, capacity: prompts[0].Count + opts.MaxNewTokens);
                    r = new GraphGenerator(decodeGraph).Generate(prompts[0], opts, Print, cancel.Token);
                }
                else r = gen.Generate(prompts, opts, Print, cancel.Token)[0];
                double seconds = clock.Elapsed.TotalSeconds;
                Console.Out.WriteLine();
                Console.Error.WriteLine($"[{r.GeneratedIds.Count} tokens, stop: {r.Finish}]");
                if (r.Speculation is { } stats)
                    Console.Error.WriteLine($"[{stats.Describe(spec!.Method)}; {r.GeneratedIds.Count / Math.Max(seconds, 1e-9):F1} tokens/s with the prefill]");
                return 0;
            }
            var results = gen.Generate(prompts, opts, null, cancel.Token);
            for (int i = 0; i < results.Count; i++)
                Console.WriteLine($"--- prompt {i} ({results[i].GeneratedIds.Count} tokens, stop: {results[i].Finish})\n{texts[i]}{tok.Decode(results[i].GeneratedIds, skipSpecialTokens: true)}");
            return 0;
        });
        return cmd;
    }

    // The --json-schema file's text, checked (compiled over an empty vocabulary) before the model loads; null without one.
    private static string? ReadSchema(string? path, bool json)
    {
        if (path == null) return null;
        if (json) throw new TemperException("give --json or --json-schema FILE, not both");
        if (!File.Exists(path)) throw new TemperException($"--json-schema {path}: file not found");
        string text = File.ReadAllText(path, System.Text.Encoding.UTF8);
        try { JsonConstraint.ForSchema(new TokenVocabulary([null], [0]), text); }
        catch (TemperException e) { throw new TemperException($"--json-schema {path}: {e.Message}"); }
        return text;
    }

    // A --prompt-file's text: the file's (or, for -, standard input's) UTF-8 contents, one trailing newline dropped.
    private static string ReadPrompt(string path)
    {
        string text;
        if (path == "-") text = Console.In.ReadToEnd();
        else if (!File.Exists(path)) throw new TemperException($"--prompt-file {path}: file not found");
        else text = File.ReadAllText(path, System.Text.Encoding.UTF8);
        text = text.EndsWith("\r\n", StringComparison.Ordinal) ? text[..^2] : text.EndsWith('\n') ? text[..^1] : text;
        if (text.Length == 0) throw new TemperException($"--prompt-file {path}: the prompt is empty");
        return text;
    }
}
