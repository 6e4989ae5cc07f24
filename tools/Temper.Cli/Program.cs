// The `temper` command: one verb per file under Commands/. Bad input prints one line on stderr and
// exits 2; --verbose adds the stack trace. Parse errors are bad input too.
using System.CommandLine;
using Temper.Cli;
using Temper.Cli.Commands;

var root = new RootCommand("Temper: LLM inference and post-training on your own hardware")
{
    CliOptions.Verbose,
    CliOptions.Device,
    CliOptions.DTypeFlag,
    CliOptions.Kernels,
    InfoCommand.Create(),
    TokenizeCommand.Create(),
    TemplateCommand.Create(),
    LogitsCommand.Create(),
    PerplexityCommand.Create(),
    GenerateCommand.Create(),
    ChatCommand.Create(),
    BenchCommand.Create(),
    PlanCommand.Create(),
    ServeCommand.Create(),
    SftCommand.Create(pretrain: false),
    SftCommand.Create(pretrain: true),
    PreferenceCommand.Create("dpo"),
    PreferenceCommand.Create("kto"),
    PreferenceCommand.Create("orpo"),
    PreferenceCommand.Create("cpo"),
    RewardModelCommand.Create(),
    GrpoCommand.Create(),
    MergeCommand.Create(),
    GgufCommand.Create(),
    GgufCommand.CreateImport(),
    QuantizeCommand.Create(),
    MergeCommand.CreateCombine(),
    DistillCommand.Create(),
    DemoCommand.Create(),
    TaskDataCommand.Create(),
};
var parsed = root.Parse(args);
if (parsed.Errors.Count > 0)
{
    Console.Error.WriteLine($"temper: {parsed.Errors[0].Message} (see 'temper {string.Join(' ', args.TakeWhile(a => !a.StartsWith('-')))} --help')");
    return 2;
}
return parsed.Invoke();
