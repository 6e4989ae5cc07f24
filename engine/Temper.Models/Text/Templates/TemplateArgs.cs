// The arguments of a call from a template: positional values and keyword values, with the
// Python rule that a parameter may be given either way.
namespace Temper.Models.Text;

internal sealed class TemplateArgs
{
    public static readonly TemplateArgs Empty = new([], []);

    public List<TemplateValue> Positional { get; }
    public List<KeyValuePair<string, TemplateValue>> Keyword { get; }

    public TemplateArgs(List<TemplateValue> positional, List<KeyValuePair<string, TemplateValue>> keyword)
    {
        Positional = positional;
        Keyword = keyword;
    }

    public static TemplateArgs Of(params TemplateValue[] positional) => new([.. positional], []);

    /// <summary>Parameter number <paramref name="index"/> (0-based) called <paramref name="name"/>, or null.</summary>
    public TemplateValue? Find(int index, string name)
    {
        if (index >= 0 && index < Positional.Count) return Positional[index];
        foreach (var (key, value) in Keyword)
            if (key == name) return value;
        return null;
    }

    public TemplateValue Get(int index, string name, TemplateValue fallback) => Find(index, name) ?? fallback;

    public TemplateValue Require(int index, string name, string function) =>
        Find(index, name) ?? throw new TemplateError($"{function}() missing 1 required positional argument: '{name}'");
}
