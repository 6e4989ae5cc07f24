// Reference log-probs computed once per data file and kept beside the run (OUT/ref_logps.json, keyed
// by the data's SHA-256 and the reference's description), so the reference costs nothing per epoch.
using System.Text.Json.Nodes;
using Temper.Core;

namespace Temper.Training.Preference;

public static class ReferenceCache
{
    public static double[] GetOrCompute(string outDir, string dataSha, string reference, string key, Func<double[]> compute)
    {
        string path = Path.Combine(outDir, "ref_logps.json");
        JsonObject doc = File.Exists(path) ? JsonNode.Parse(File.ReadAllText(path)) as JsonObject ?? new JsonObject() : new JsonObject();
        if (doc["data_sha256"]?.GetValue<string>() == dataSha && doc["reference"]?.GetValue<string>() == reference && doc[key] is JsonArray cached)
            return cached.Select(v => v!.GetValue<double>()).ToArray();
        if (doc["data_sha256"]?.GetValue<string>() != dataSha || doc["reference"]?.GetValue<string>() != reference)
            doc = new JsonObject { ["data_sha256"] = dataSha, ["reference"] = reference };
        var values = compute();
        doc[key] = new JsonArray(values.Select(v => (JsonNode)v).ToArray());
        Directory.CreateDirectory(outDir);
        AtomicFile.WriteAllText(path, doc.ToJsonString());
        return values;
    }
}
