// `temper logits --model DIR [--adapter DIR] [--qlora] --ids FILE.json [--attention-mask FILE.json] --out FILE.safetensors`:
// FILE.json is a list of equal-length id lists ([B][T]); writes one float32 tensor `logits` [B,T,V].
using System.CommandLine;
using System.Text.Json;
using System.Text.Json.Nodes;
using Temper.Core;
using Temper.Core.SafeTensors;

namespace Temper.Cli.Commands;

internal static class LogitsCommand
{
    public static Command Create()
    {
        var model = CliOptions.Model();
        var adapter = CliOptions.Adapter();
        var threads = CliOptions.Threads();
        var qlora = CliOptions.QLora();
        var ids = new Option<string>("--ids") { Description = "JSON file: a list of equal-length token id lists", Required = true };
        var mask = new Option<string?>("--attention-mask") { Description = "JSON file: 0/1 lists of the same shape as --ids" };
        var output = new Option<string>("--out") { Description = "Output .safetensors file", Required = true };
        var cmd = new Command("logits", "Write the model's logits for token ids to a safetensors file") { model, adapter, threads, qlora, ids, mask, output };
        cmd.SetGuardedAction(p =>
        {
            var (rows, t) = ReadMatrix(p.GetValue(ids)!, "token ids");
            int[]? m = null;
            if (p.GetValue(mask) is string maskPath)
            {
                var (mrows, mt) = ReadMatrix(maskPath, "mask values");
                if (mrows.Length != rows.Length || mt != t) throw new TemperException($"{maskPath}: mask shape [{mrows.Length},{mt}] differs from ids [{rows.Length},{t}]");
                if (mrows.Any(r => r.Any(v => v is not (0 or 1)))) throw new TemperException($"{maskPath}: mask values must be 0 or 1");
                m = mrows.SelectMany(r => r).ToArray();
            }
            using var lm = CliOptions.LoadModel(p, model, adapter, threads, qlora);
            foreach (var (row, i) in rows.Select((r, i) => (r, i)))
                foreach (var id in row)
                    if ((uint)id >= (uint)lm.Config.VocabSize) throw new TemperException($"{p.GetValue(ids)}: row {i} has token id {id} outside the vocabulary (size {lm.Config.VocabSize})");
            using var logits = lm.Logits(rows.SelectMany(r => r).ToArray(), rows.Length, m);
            var host = lm.Decoder.Backend.ToHost(logits);
            var shaped = new Tensor(new Shape(rows.Length, t, lm.Config.VocabSize), DType.F32, host.Storage, "logits");
            SafetensorsWriter.Write(p.GetValue(output)!, [new("logits", shaped)]);
            return 0;
        });
        return cmd;
    }

    /// <summary>Reads a JSON list of equal-length integer lists; errors name the file and the row.</summary>
    public static (int[][] Rows, int Length) ReadMatrix(string path, string what)
    {
        if (!File.Exists(path)) throw new TemperException($"{path}: file not found");
        JsonNode? node;
        try { node = JsonNode.Parse(File.ReadAllText(path)); }
        catch (JsonException e) { throw new TemperException($"{path}: malformed JSON at line {e.LineNumber + 1}"); }
        if (node is not JsonArray outer || outer.Count == 0) throw new TemperException($"{path}: expected a non-empty list of lists of {what}");
        var rows = new int[outer.Count][];
        for (int i = 0; i < outer.Count; i++)
        {
            if (outer[i] is not JsonArray inner) throw new TemperException($"{path}: row {i} is not a list");
            try { rows[i] = inner.Select(v => v!.GetValue<int>()).ToArray(); }
            catch (Exception e) when (e is InvalidOperationException or FormatException or NullReferenceException)
            {
                throw new TemperException($"{path}: row {i} holds a value that is not an integer");
            }
            if (rows[i].Length != rows[0].Length) throw new TemperException($"{path}: row {i} has {rows[i].Length} values, row 0 has {rows[0].Length}; rows must be equal length");
        }
        if (rows[0].Length == 0) throw new TemperException($"{path}: rows are empty");
        return (rows, rows[0].Length);
    }
}
