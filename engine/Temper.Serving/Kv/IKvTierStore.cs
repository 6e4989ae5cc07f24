// Where evicted prefix-cache blocks go when the device pool reuses their memory: slower tiers (host
// memory, then disk) that keep a block's K/V by its chained hash and copy it back on a prefix hit.
namespace Temper.Serving.Kv;

public interface IKvTierStore
{
    /// <summary>Keeps the contents of device block <paramref name="block"/> under <paramref name="hash"/> (it is about to be reused).</summary>
    void Offload(ulong hash, int block);
    bool Contains(ulong hash);
    /// <summary>Copies the block stored under <paramref name="hash"/> into device block <paramref name="block"/>.</summary>
    bool TryRestore(ulong hash, int block);
    void RecordDeviceHit();
    void RecordDeviceMiss();
}
