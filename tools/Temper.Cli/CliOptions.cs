// Options shared by several verbs, and the wrapper that turns bad input into a one-line error.
using System.CommandLine;
using System.Text.Json;
using Temper.Core;
using Temper.Kernels.Cpu;
using Temper.Models;

namespace Temper.Cli;

internal static class CliOptions
{
    public static readonly Option<bool> Verbose = new("--verbose") { Description = "Print stack traces with errors", Recursive = true };

    public static Option<string> Model() => new("--model", "-m") { Description = "Model folder (config.json, safetensors, tokenizer.json)", Required = true };
    public static Option<string?> Adapter() => new("--adapter") { Description = "PEFT LoRA adapter folder, applied unmerged" };
    public static Option<int> Threads() => new("--threads") { Description = "CPU threads (0 = all cores)", DefaultValueFactory = _ => 0 };

    /// <summary>Runs a verb: TemperException, missing files and bad JSON become one line on stderr and exit 2.</summary>
    public static void SetGuardedAction(this Command cmd, Func<ParseResult, int> action) => cmd.SetAction(p => Guard(p, action));

    public static int Guard(ParseResult p, Func<ParseResult, int> action)
    {
        try
        {
            return action(p);
        }
        catch (Exception e) when (e is TemperException or FileNotFoundException or DirectoryNotFoundException or JsonException or UnauthorizedAccessException)
        {
            Console.Error.WriteLine($"temper: {e.Message}");
            if (p.GetValue(Verbose)) Console.Error.WriteLine(e);
            return 2;
        }
        catch (OperationCanceledException)
        {
            Console.Error.WriteLine("temper: cancelled");
            return 130;
        }
    }

    public static CpuBackend Backend(int threads) => new(threads);

    public static LanguageModel LoadModel(ParseResult p, Option<string> model, Option<string?>? adapter, Option<int> threads) =>
        LanguageModel.Load(p.GetValue(model)!, Backend(p.GetValue(threads)), adapter == null ? null : p.GetValue(adapter));
}
