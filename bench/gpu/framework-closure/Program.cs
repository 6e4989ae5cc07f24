// The shared-framework assemblies that the published apps under APPS never load by reference: the transitive closure of
// the assembly references of every .dll under APPS through the framework folders given (Microsoft.NETCore.App,
// Microsoft.AspNetCore.App), and prints the framework .dll files outside it, one file name a line. bench/gpu/pack.sh
// leaves them out of the runtime it carries to the GPU machine (the carry's 64 MiB limit). The .NET host runs without
// them (it does not require every file its framework's deps.json lists); an assembly loaded by name through reflection
// alone would be missed, which is why pack.sh's caller checks the trimmed runtime on the packed apps before a lease.
// Usage: dotnet run --project bench/gpu/framework-closure -- APPS FRAMEWORK_DIR...
using System.Reflection.Metadata;
using System.Reflection.PortableExecutable;

if (args.Length < 2)
{
    Console.Error.WriteLine("usage: framework-closure APPS FRAMEWORK_DIR...");
    return 2;
}
var framework = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
foreach (var dir in args.Skip(1))
    foreach (var file in Directory.GetFiles(dir, "*.dll")) framework[Path.GetFileNameWithoutExtension(file)] = file;

var reached = new HashSet<string>(StringComparer.OrdinalIgnoreCase);
var pending = new Queue<string>();
void Visit(string path)
{
    foreach (var name in References(path))
        if (framework.ContainsKey(name) && reached.Add(name)) pending.Enqueue(name);
}
foreach (var file in Directory.GetFiles(args[0], "*.dll", SearchOption.AllDirectories)) Visit(file);
while (pending.Count > 0) Visit(framework[pending.Dequeue()]);

foreach (var (name, path) in framework.OrderBy(kv => kv.Key, StringComparer.Ordinal))
    if (!reached.Contains(name)) Console.WriteLine(Path.GetFileName(path));
Console.Error.WriteLine($"framework-closure: the apps reach {reached.Count} of {framework.Count} framework assemblies");
return 0;

// The names of the assemblies a .dll references (none for a native or resource-only file).
static IEnumerable<string> References(string path)
{
    using var stream = File.OpenRead(path);
    using var pe = new PEReader(stream);
    MetadataReader metadata;
    try
    {
        if (!pe.HasMetadata) return [];
        metadata = pe.GetMetadataReader();
    }
    catch (BadImageFormatException)
    {
        return [];
    }
    return [.. metadata.AssemblyReferences.Select(h => metadata.GetString(metadata.GetAssemblyReference(h).Name))];
}
