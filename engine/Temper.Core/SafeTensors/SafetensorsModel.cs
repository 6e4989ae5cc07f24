// A model's weights as one name -> tensor map, whatever the folder holds: a single model.safetensors,
// or model.safetensors.index.json and its shards (each shard mapped once). Open takes the folder or
// either file. Like transformers, a folder with both prefers model.safetensors. All shards are
// opened and every indexed tensor is checked to be in its shard before Open returns.
using static Temper.Core.SafeTensors.SafetensorsErrors;

namespace Temper.Core.SafeTensors;

public sealed class SafetensorsModel : IDisposable
{
    public const string SingleFileName = "model.safetensors";
    public const string IndexFileName = "model.safetensors.index.json";

    private readonly List<SafetensorsFile> _files;
    private readonly Dictionary<string, SafetensorsFile> _fileOf;
    private readonly List<string> _names;

    private SafetensorsModel(string folder, List<SafetensorsFile> files, List<KeyValuePair<string, SafetensorsFile>> tensors)
    {
        Folder = folder;
        _files = files;
        _names = tensors.Select(t => t.Key).ToList();
        _fileOf = tensors.ToDictionary(t => t.Key, t => t.Value, StringComparer.Ordinal);
    }

    /// <summary>The folder the weights were found in (full path).</summary>
    public string Folder { get; }
    /// <summary>The files opened: one, or every shard.</summary>
    public IReadOnlyList<SafetensorsFile> Files => _files;
    /// <summary>Tensor names, in file order (single file) or index order (sharded).</summary>
    public IEnumerable<string> Names => _names;

    public static SafetensorsModel Open(string dirOrFile)
    {
        string full = Path.TrimEndingDirectorySeparator(Path.GetFullPath(dirOrFile));
        if (Directory.Exists(full))
        {
            if (File.Exists(Path.Combine(full, SingleFileName))) return OpenSingle(Path.Combine(full, SingleFileName));
            if (File.Exists(Path.Combine(full, IndexFileName))) return OpenSharded(Path.Combine(full, IndexFileName));
            throw InFile(full, $"no {SingleFileName} or {IndexFileName} in this folder");
        }
        if (File.Exists(full))
            return full.EndsWith(".index.json", StringComparison.Ordinal) ? OpenSharded(full) : OpenSingle(full);
        throw InFile(full, "no such file or folder");
    }

    private static SafetensorsModel OpenSingle(string file)
    {
        var f = SafetensorsFile.Open(file);
        return new SafetensorsModel(Path.GetDirectoryName(file)!, [f], f.Entries.Select(e => new KeyValuePair<string, SafetensorsFile>(e.Name, f)).ToList());
    }

    private static SafetensorsModel OpenSharded(string indexPath)
    {
        var weightMap = SafetensorsIndex.ReadWeightMap(indexPath);
        var shards = new Dictionary<string, SafetensorsFile>(StringComparer.Ordinal);
        try
        {
            var tensors = new List<KeyValuePair<string, SafetensorsFile>>(weightMap.Count);
            foreach (var (tensor, shardPath) in weightMap)
            {
                if (!shards.TryGetValue(shardPath, out var shard)) shards[shardPath] = shard = SafetensorsFile.Open(shardPath);
                if (!shard.Contains(tensor))
                    throw InTensor(shardPath, tensor, $"listed in {Path.GetFileName(indexPath)} but absent from this shard");
                tensors.Add(new(tensor, shard));
            }
            return new SafetensorsModel(Path.GetDirectoryName(indexPath)!, [.. shards.Values], tensors);
        }
        catch
        {
            foreach (var s in shards.Values) s.Dispose();
            throw;
        }
    }

    public bool Contains(string name) => _fileOf.ContainsKey(name);

    /// <summary>The header entry of <paramref name="name"/> (in whichever shard holds it).</summary>
    public SafetensorsEntry Entry(string name) => FileOf(name).Entry(name);

    /// <summary>A host tensor over the mapped bytes; valid while this model is open.</summary>
    public Tensor Get(string name) => FileOf(name).Get(name);

    public DType DTypeOf(string name) => Entry(name).DType;
    public Shape ShapeOf(string name) => Entry(name).Shape;

    private SafetensorsFile FileOf(string name) =>
        _fileOf.TryGetValue(name, out var f) ? f : throw InTensor(Folder, name, "not found in this model folder");

    public void Dispose()
    {
        foreach (var f in _files) f.Dispose();
    }
}
