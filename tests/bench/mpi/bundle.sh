#!/bin/bash
# bundle.sh BUILD_DIR DEST: ctxd-corpus, Open MPI's launcher and plugins, and
# every shared library they load (glibc and its loader too), as DEST.tar.xz,
# so the scaling benchmark runs on a machine without Open MPI or with
# another glibc (the device machine: see tests/bench/mpi/run.sh).
set -euo pipefail
B=$1 D=$2
rm -rf "$D"; mkdir -p "$D/bin" "$D/lib" "$D/plugins" "$D/share"
cp "$B/ctxd-corpus" "$D/bin/"
cp "$(readlink -f "$(command -v orterun)")" "$D/bin/orterun"
cp tests/bench/mpi/gen_shards.py "$D/bin/"
P=/usr/lib/x86_64-linux-gnu/openmpi/lib/openmpi3
# the components a single-node run uses (shared memory and TCP)
for c in "$P"/mca_{btl_self,btl_vader,btl_tcp,pml_ob1,bml_r2,coll_*,ess_*,odls_default,oob_tcp,plm_rsh,plm_isolated,ras_simulator,rmaps_*,routed_*,rml_oob,grpcomm_direct,iof_*,errmgr_*,state_*,schizo_*,pmix_*,pstat_linux,regx_*,rcache_grdma,mpool_hugepage,allocator_*,osc_sm,osc_pt2pt,reachable_*,filem_raw,dfs_*,patcher_overwrite,shmem_*,op_avx,sec_*,pnet_*,preg_*,ptl_*,psec_*,pshmem_*,bfrops_*,gds_*,pif_*,plog_*}.so; do
  [ -e "$c" ] && cp "$c" "$D/plugins/"
done
cp -r /usr/lib/x86_64-linux-gnu/pmix2 "$D/pmix2" 2>/dev/null || true
cp -r /usr/share/openmpi "$D/share/" 2>/dev/null || true
{ ldd "$D/bin/ctxd-corpus"; ldd "$D/bin/orterun"; for f in "$D"/plugins/*.so "$D"/pmix2/lib/pmix/*.so; do [ -e "$f" ] && ldd "$f"; done; } |
  awk '/=> \//{print $3} /^\s*\/lib64\//{print $1}' | sort -u | while read -r l; do cp -L "$l" "$D/lib/"; done
# glibc stays behind unless asked for: Open MPI puts DEST/lib on the ranks'
# LD_LIBRARY_PATH, where an older glibc breaks the machine's /bin/sh
if [ "${BUNDLE_GLIBC:-0}" = 1 ]; then
  cp -L /lib64/ld-linux-x86-64.so.2 "$D/lib/"
else
  rm -f "$D"/lib/{libc.so.6,libm.so.6,libpthread.so.0,libdl.so.2,librt.so.1,libutil.so.1,ld-linux-x86-64.so.2}
fi
tar -C "$(dirname "$D")" -cJf "$D.tar.xz" "$(basename "$D")"
rm -rf "$D"
ls -la "$D.tar.xz"
