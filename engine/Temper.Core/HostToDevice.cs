// Copies a host tensor into an existing tensor of a backend (host or device memory), e.g. restoring
// trained weights and optimizer state from a checkpoint into a run that lives on the GPU. Both f32;
// the shapes must match (checked by the caller, which can name the file). On a device backend the
// values go up once and into place with CopyRows (a row is the last dimension).
namespace Temper.Core;

public static class HostToDevice
{
    public static void CopyInto(this IBackend be, Tensor host, Tensor dst)
    {
        if (!host.IsHost) throw new ArgumentException($"{host} is not a host tensor");
        if (host.Shape.Elements != dst.Shape.Elements) throw new ArgumentException($"{host} does not fit {dst}");
        if (dst.DType != DType.F32) throw new TemperException($"{dst}: only f32 tensors can be restored (this one is {dst.DType})");
        using var f32 = host.DType == DType.F32 ? null : host.ToF32();
        var src = f32 ?? host;
        if (dst.IsHost)
        {
            src.Floats.CopyTo(dst.Floats);
            return;
        }
        int cols = dst.Shape.Rank == 0 ? 1 : dst.Shape[dst.Shape.Rank - 1];
        using var up = be.FromHost(new Tensor(dst.Shape, DType.F32, src.Storage, src.Name));
        be.CopyRows(up, 0, dst, 0, (int)(dst.Shape.Elements / Math.Max(1, cols)));
    }
}
