// A training checkpoint folder, checkpoint-<step>/: trainable.safetensors (the trained tensors by
// name), optimizer.safetensors (AdamW moments) and trainer_state.json (step, data cursor, seed).
// Written into a temp folder and renamed, so a crash never leaves a half checkpoint behind.
using System.Text.Json.Nodes;
using Temper.Core;
using Temper.Core.SafeTensors;
using Temper.Training.Optim;

namespace Temper.Training.Runs;

public sealed record TrainerState(int Step, int Epoch, int BatchIndex, string DataSha256);

public static class Checkpoint
{
    public static string Save(string runDir, TrainerState state, TrainableParameters ps, AdamW opt, IBackend be)
    {
        string final = Path.Combine(runDir, $"checkpoint-{state.Step}");
        string tmp = final + ".tmp-" + Guid.NewGuid().ToString("N")[..8];
        Directory.CreateDirectory(tmp);
        try
        {
            SafetensorsWriter.Write(Path.Combine(tmp, "trainable.safetensors"), ps.All.Select(p => new KeyValuePair<string, Tensor>(p.Name, be.ToHost(p.Value))));
            SafetensorsWriter.Write(Path.Combine(tmp, "optimizer.safetensors"), opt.State().Select(kv => new KeyValuePair<string, Tensor>(kv.Key, be.ToHost(kv.Value))));
            var json = new JsonObject
            {
                ["step"] = state.Step,
                ["epoch"] = state.Epoch,
                ["batch_index"] = state.BatchIndex,
                ["optimizer_step"] = opt.Step,
                ["data_sha256"] = state.DataSha256,
            };
            AtomicFile.WriteAllText(Path.Combine(tmp, "trainer_state.json"), json.ToJsonString(new() { WriteIndented = true }));
            if (Directory.Exists(final)) Directory.Delete(final, true);
            Directory.Move(tmp, final);
        }
        catch
        {
            if (Directory.Exists(tmp)) Directory.Delete(tmp, true);
            throw;
        }
        return final;
    }

    /// <summary>The checkpoint with the highest step in a run folder, or null.</summary>
    public static string? Latest(string runDir)
    {
        if (!Directory.Exists(runDir)) return null;
        return Directory.GetDirectories(runDir, "checkpoint-*")
            .Select(d => (Dir: d, Ok: int.TryParse(Path.GetFileName(d)["checkpoint-".Length..], out int s), Step: s))
            .Where(x => x.Ok && File.Exists(Path.Combine(x.Dir, "trainer_state.json")))
            .OrderByDescending(x => x.Step)
            .Select(x => x.Dir)
            .FirstOrDefault();
    }

    /// <summary>Restores trained tensors and optimizer state; returns the saved state.</summary>
    public static TrainerState Load(string dir, TrainableParameters ps, AdamW opt)
    {
        string statePath = Path.Combine(dir, "trainer_state.json");
        var s = JsonNode.Parse(File.ReadAllText(statePath)) as JsonObject ?? throw new TemperException($"{statePath}: not a JSON object");
        using (var t = SafetensorsFile.Open(Path.Combine(dir, "trainable.safetensors")))
            foreach (var p in ps.All)
            {
                if (!t.Contains(p.Name)) throw new TemperException($"{t.Path}: tensor '{p.Name}' missing; the checkpoint was made by a different run configuration");
                var src = t.Get(p.Name);
                if (src.Shape != p.Value.Shape) throw new TemperException($"{t.Path}: tensor '{p.Name}' has shape {src.Shape}, the run has {p.Value.Shape}");
                ps.Backend.CopyInto(src, p.Value);   // host or device memory alike
            }
        using (var o = SafetensorsFile.Open(Path.Combine(dir, "optimizer.safetensors")))
            opt.Load(n => o.Contains(n) ? o.Get(n) : null, s["optimizer_step"]!.GetValue<int>(), o.Path);
        return new TrainerState(s["step"]!.GetValue<int>(), s["epoch"]!.GetValue<int>(), s["batch_index"]!.GetValue<int>(), s["data_sha256"]!.GetValue<string>());
    }
}
