// `temper quantize --model DIR --out DIR [--no-double-quant] [--skip-modules LIST]`: writes DIR as a
// bitsandbytes 4-bit (NF4) checkpoint that transformers + bitsandbytes, vLLM and Temper load in 4 bits
// (Bnb4BitExport: bnb_4bit_quant_type nf4, blocks of 64, double quantisation unless --no-double-quant).
using System.CommandLine;
using Temper.Models;

namespace Temper.Cli.Commands;

internal static class QuantizeCommand
{
    public static Command Create()
    {
        var model = CliOptions.Model();
        var output = new Option<string>("--out") { Description = "Folder for the 4-bit checkpoint", Required = true };
        var plain = new Option<bool>("--no-double-quant") { Description = "Keep each block's absmax in f32 (bnb_4bit_use_double_quant=False); default: 8-bit absmax codes, as QLoRA" };
        var skip = new Option<string?>("--skip-modules") { Description = "Comma-separated modules kept unquantised (llm_int8_skip_modules), e.g. mlp.down_proj or model.layers.0" };
        var cmd = new Command("quantize", "Write a model folder as a bitsandbytes 4-bit (NF4) checkpoint") { model, output, plain, skip };
        cmd.SetGuardedAction(p =>
        {
            var skipped = (p.GetValue(skip) ?? "").Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
            var s = Bnb4BitExport.Save(p.GetValue(model)!, p.GetValue(output)!, doubleQuant: !p.GetValue(plain), skipped);
            Console.WriteLine($"quantised {s.Quantized} projections to NF4{(s.Skipped > 0 ? $", kept {s.Skipped} dense" : "")}; weights {s.SourceBytes / 1048576.0:F1} MiB -> {s.WrittenBytes / 1048576.0:F1} MiB; wrote {p.GetValue(output)}");
            return 0;
        });
        return cmd;
    }
}
