#!/usr/bin/env bash
# Packs what bench/gpu/lease.sh needs on the lent GPU machine (which has no .NET SDK) into .gpuc/ (ignored
# by git; the device tool carries it with carry [".gpuc"]): the .NET runtime with ASP.NET Core (temper
# serve needs it) as dotnet.tar.xz, framework-dependent Release publishes of the CLI and the GPU test
# projects as apps.tar.xz (app/<Project>/), and ../shared/fixtures as fixtures.tar.xz (the device tool carries
# only the repository). About 35 MB; the carried tree's limit is 64 MiB, the repository's tracked files (25 MB) included.
# Usage (repo root): bash bench/gpu/pack.sh        then, on the device: bash bench/gpu/lease.sh STEP ...
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p .git/info .gpuc .gpu/app
for d in /.gpu/ /.gpuc/; do grep -qx "$d" .git/info/exclude 2>/dev/null || echo "$d" >> .git/info/exclude; done
dn=$(dirname "$(readlink -f "$(command -v dotnet)")")
for p in tools/Temper.Cli/Temper.Cli.csproj tests/Temper.Cuda.Tests/Temper.Cuda.Tests.csproj tests/Temper.Kernels.Ilgpu.Tests/Temper.Kernels.Ilgpu.Tests.csproj tests/Temper.Native.Tests/Temper.Native.Tests.csproj; do
  n=$(basename "$p" .csproj)
  rm -rf ".gpu/app/$n"
  dotnet publish "$p" -c Release -r linux-x64 --self-contained false -o ".gpu/app/$n" -v q -nologo
done
# The runtime without what nothing here loads: the debugger and tracing libraries (createdump, libmscordaccore/dbi, the LTTng
# provider, 5 MB), the standalone GCs, and the framework assemblies that the apps just published never reference
# (bench/gpu/framework-closure: about 140 of 313, 20 MB, MVC, Razor, SignalR, Identity, VisualBasic, ...). The carry had come
# within 0.6 MB of its limit. The list is kept beside the tarball, which is rebuilt when it changes.
# xz -9e: its 64 MB window also finds the assemblies the publishes share (apps 13.5 MB at the default level, about 6 at -9e).
dotnet build bench/gpu/framework-closure -c Release -v q -nologo > /dev/null
unused=$(dotnet bench/gpu/framework-closure/bin/Release/net10.0/FrameworkClosure.dll .gpu/app "$dn"/shared/Microsoft.NETCore.App/*/ "$dn"/shared/Microsoft.AspNetCore.App/*/)
[ "$unused" = "$(cat .gpuc/framework-unused.txt 2>/dev/null)" ] || rm -f .gpuc/dotnet.tar.xz
printf '%s\n' "$unused" > .gpuc/framework-unused.txt
if [ ! -s .gpuc/dotnet.tar.xz ]; then
  excludes=(--exclude=createdump --exclude=libmscordaccore.so --exclude=libmscordbi.so --exclude=libcoreclrtraceptprovider.so --exclude=libclrgc.so --exclude=libclrgcexp.so)
  while read -r f; do [ -n "$f" ] && excludes+=("--exclude=$f"); done <<< "$unused"
  tar -cf - -C "$dn" "${excludes[@]}" dotnet host shared/Microsoft.NETCore.App shared/Microsoft.AspNetCore.App | xz -9e -T2 > .gpuc/dotnet.tar.xz
fi
tar -cf - -C .gpu app | xz -9e -T2 > .gpuc/apps.tar.xz
# The fixtures xz-compressed (4.5 MB -> 3.2 MB of the carry); lease.sh unpacks them into /tmp/fixtures.
rm -rf .gpuc/fixtures && tar -cf - -C ../shared fixtures | xz -9e -T2 > .gpuc/fixtures.tar.xz
du -sh .gpuc | awk '{print "packed .gpuc: " $1}'
