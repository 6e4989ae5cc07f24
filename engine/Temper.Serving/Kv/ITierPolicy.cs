// Which block a full tier gives up next. The tier tells its policy about every key it stores, reads
// and drops; LRU (the default) evicts the key least recently stored or read.
namespace Temper.Serving.Kv;

public interface ITierPolicy
{
    /// <summary>A key was stored or read.</summary>
    void Touch(ulong key);
    void Remove(ulong key);
    /// <summary>The key to evict next (the tier is not empty).</summary>
    ulong Victim();
}

public sealed class LruPolicy : ITierPolicy
{
    private readonly LinkedList<ulong> _order = new();
    private readonly Dictionary<ulong, LinkedListNode<ulong>> _nodes = [];

    public void Touch(ulong key)
    {
        if (_nodes.Remove(key, out var node)) _order.Remove(node);
        _nodes[key] = _order.AddLast(key);
    }

    public void Remove(ulong key)
    {
        if (_nodes.Remove(key, out var node)) _order.Remove(node);
    }

    public ulong Victim() => _order.First?.Value ?? throw new InvalidOperationException("the tier is empty");
}
