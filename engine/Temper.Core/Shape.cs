// An immutable list of dimension sizes, outermost first ([B,T,C] is B*T*C elements, C contiguous).
namespace Temper.Core;

public readonly struct Shape : IEquatable<Shape>
{
    private readonly int[]? _dims;

    public Shape(params int[] dims)
    {
        foreach (var d in dims)
            if (d < 0) throw new ArgumentOutOfRangeException(nameof(dims), $"negative dimension in {Format(dims)}");
        _dims = (int[])dims.Clone();
    }

    public int Rank => _dims?.Length ?? 0;
    public int this[int axis] => Dims[axis < 0 ? Rank + axis : axis];
    public ReadOnlySpan<int> Dims => _dims ?? [];

    /// <summary>Total element count (1 for a scalar).</summary>
    public long Elements
    {
        get
        {
            long n = 1;
            foreach (var d in Dims) n *= d;
            return n;
        }
    }

    /// <summary>Product of all but the last dimension: the number of rows of a row-major view.</summary>
    public int Rows => Rank == 0 ? 1 : checked((int)(Elements / Math.Max(1, this[-1])));

    public Shape WithLast(int last)
    {
        var d = Dims.ToArray();
        d[^1] = last;
        return new Shape(d);
    }

    public bool Equals(Shape other) => Dims.SequenceEqual(other.Dims);
    public override bool Equals(object? obj) => obj is Shape s && Equals(s);
    public override int GetHashCode()
    {
        var h = new HashCode();
        foreach (var d in Dims) h.Add(d);
        return h.ToHashCode();
    }
    public static bool operator ==(Shape a, Shape b) => a.Equals(b);
    public static bool operator !=(Shape a, Shape b) => !a.Equals(b);
    public override string ToString() => Format(Dims);
    private static string Format(ReadOnlySpan<int> d) => "[" + string.Join(",", d.ToArray()) + "]";
}
