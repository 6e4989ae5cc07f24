#!/usr/bin/env bash
# Packs what bench/gpu/lease.sh needs on the lent GPU machine (which has no .NET SDK) into .gpuc/ (ignored
# by git; the device tool carries it with carry [".gpuc"]): the .NET runtime with ASP.NET Core (temper
# serve needs it) as dotnet.tar.xz, framework-dependent Release publishes of the CLI and the GPU test
# projects as apps.tar.xz (app/<Project>/), and ../shared/fixtures as fixtures.tar.xz (the device tool carries
# only the repository). About 44 MB; the carried tree's limit is 64 MiB, the repository's tracked files included.
# Usage (repo root): bash bench/gpu/pack.sh        then, on the device: bash bench/gpu/lease.sh STEP ...
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p .git/info .gpuc .gpu/app
for d in /.gpu/ /.gpuc/; do grep -qx "$d" .git/info/exclude 2>/dev/null || echo "$d" >> .git/info/exclude; done
dn=$(dirname "$(readlink -f "$(command -v dotnet)")")
# xz -9e: its 64 MB window also finds the assemblies the publishes share (apps 13.5 MB at the default level, about 6 at -9e).
# Without the runtime's debugger and tracing libraries (createdump, libmscordaccore/dbi, the LTTng provider: 5 MB, about 1.3 MB
# of the carry), which nothing here loads: the carry had come within 0.4% of its limit.
[ -s .gpuc/dotnet.tar.xz ] || tar -cf - -C "$dn" --exclude=createdump --exclude=libmscordaccore.so --exclude=libmscordbi.so \
  --exclude=libcoreclrtraceptprovider.so dotnet host shared/Microsoft.NETCore.App shared/Microsoft.AspNetCore.App | xz -9e -T2 > .gpuc/dotnet.tar.xz
for p in tools/Temper.Cli/Temper.Cli.csproj tests/Temper.Cuda.Tests/Temper.Cuda.Tests.csproj tests/Temper.Kernels.Ilgpu.Tests/Temper.Kernels.Ilgpu.Tests.csproj tests/Temper.Native.Tests/Temper.Native.Tests.csproj; do
  n=$(basename "$p" .csproj)
  rm -rf ".gpu/app/$n"
  dotnet publish "$p" -c Release -r linux-x64 --self-contained false -o ".gpu/app/$n" -v q -nologo
done
tar -cf - -C .gpu app | xz -9e -T2 > .gpuc/apps.tar.xz
# The fixtures xz-compressed (4.5 MB -> 3.2 MB of the carry); lease.sh unpacks them into /tmp/fixtures.
rm -rf .gpuc/fixtures && tar -cf - -C ../shared fixtures | xz -9e -T2 > .gpuc/fixtures.tar.xz
du -sh .gpuc | awk '{print "packed .gpuc: " $1}'
