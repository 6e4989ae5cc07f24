// Reads model.safetensors.index.json, the map a sharded checkpoint uses from tensor name to shard:
//   {"metadata": {"total_size": 123, ...}, "weight_map": {"<tensor>": "model-00001-of-00002.safetensors", ...}}
// Only weight_map is used; "metadata" and any other top-level field are skipped. Shard names must be
// files inside the index's folder.
using System.Text.Json;
using System.Text.Unicode;
using static Temper.Core.SafeTensors.SafetensorsErrors;

namespace Temper.Core.SafeTensors;

internal static class SafetensorsIndex
{
    /// <summary>(tensor, full shard path) in the order the index lists them.</summary>
    public static List<KeyValuePair<string, string>> ReadWeightMap(string indexPath)
    {
        var folder = Path.GetDirectoryName(indexPath)!;
        byte[] json;
        try
        {
            long length = new FileInfo(indexPath).Length;
            if (length > SafetensorsHeader.MaxHeaderBytes) throw InFile(indexPath, $"index is {length} bytes, over the {SafetensorsHeader.MaxHeaderBytes}-byte limit");
            json = File.ReadAllBytes(indexPath);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw InFile(indexPath, $"cannot read index: {e.Message}");
        }
        if (!Utf8.IsValid(json)) throw InFile(indexPath, "index is not valid UTF-8");

        List<KeyValuePair<string, string>>? map = null;
        var reader = new Utf8JsonReader(json);
        try
        {
            if (!reader.Read() || reader.TokenType != JsonTokenType.StartObject) throw InFile(indexPath, "index is not a JSON object");
            while (reader.Read() && reader.TokenType == JsonTokenType.PropertyName)
            {
                string key = reader.GetString()!;
                reader.Read();
                if (key != "weight_map")
                {
                    reader.Skip();
                    continue;
                }
                if (map != null) throw InFile(indexPath, "duplicate weight_map in index");
                map = ReadMap(indexPath, folder, ref reader);
            }
            if (reader.Read()) throw InFile(indexPath, "index has content after its JSON object");
        }
        catch (JsonException e)
        {
            throw InFile(indexPath, $"index is not valid JSON: {e.Message}");
        }
        return map ?? throw InFile(indexPath, "index has no weight_map");
    }

    private static List<KeyValuePair<string, string>> ReadMap(string indexPath, string folder, ref Utf8JsonReader reader)
    {
        if (reader.TokenType != JsonTokenType.StartObject) throw InFile(indexPath, "weight_map is not a JSON object");
        var map = new List<KeyValuePair<string, string>>();
        var seen = new HashSet<string>(StringComparer.Ordinal);
        while (reader.Read() && reader.TokenType == JsonTokenType.PropertyName)
        {
            string tensor = reader.GetString()!;
            reader.Read();
            if (reader.TokenType != JsonTokenType.String) throw InTensor(indexPath, tensor, $"weight_map value is {reader.TokenType}, not a shard file name");
            if (!seen.Add(tensor)) throw InTensor(indexPath, tensor, "listed twice in weight_map");
            string shard = reader.GetString()!;
            string shardPath = Path.GetFullPath(Path.Combine(folder, shard));
            if (Path.IsPathRooted(shard) || !shardPath.StartsWith(folder + Path.DirectorySeparatorChar, StringComparison.Ordinal))
                throw InTensor(indexPath, tensor, $"weight_map points outside the folder ('{shard}')");
            if (!File.Exists(shardPath)) throw InTensor(indexPath, tensor, $"weight_map points to missing shard '{shard}'");
            map.Add(new(tensor, shardPath));
        }
        return map;
    }
}
