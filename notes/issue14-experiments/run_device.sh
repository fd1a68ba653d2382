#!/bin/bash
# Issue-14 experiments on a lent GPU machine, whose copy of the repository is the main checkout:
#   git archive realism2 | tar -x -C /tmp/x && bash /tmp/x/notes/issue14-experiments/run_device.sh
# Packages the machine lacks come from git blobs listed in manifest.txt (wheels, the MNI152 files
# nilearn bundles). Each variant (variants.txt: name, BRAINSEG_SYN_FLAGS, BRAINSEG_AUG, extra args)
# runs benchmarks/bench_transfer.py on a copy of the package with the flagged generator/augmentation.
X=/tmp/x; E=$X/notes/issue14-experiments; t0=$(date +%s)
mkdir -p /tmp/whl /tmp/res /tmp/site/nilearn/datasets/data
while read -r sha name; do git cat-file blob "$sha" > /tmp/whl/$name || exit 4; done < $E/manifest.txt
mv /tmp/whl/*.nii.gz /tmp/site/nilearn/datasets/data/
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site /tmp/whl/*.whl .whl/nibabel-5.4.2-py3-none-any.whl || exit 5
echo '__version__ = "0.12.1 (template files only)"' > /tmp/site/nilearn/__init__.py; touch /tmp/site/nilearn/datasets/__init__.py
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
nvidia-smi -L; nproc
(cd $X && PYTHONPATH=$X:/tmp/site python3 benchmarks/realanatomy.py --out /tmp/real --cases 12 --workers 12 > /tmp/res/real.log 2>&1) || { tail -30 /tmp/res/real.log; exit 6; }
echo "realanatomy built at $(( $(date +%s) - t0 )) s"
run_variant() {
  local name=$1 flags=$2 aug=$3; shift 3
  local d=/tmp/v_$name
  mkdir -p $d && cp -r $X/brainseg_utils $X/benchmarks $d/ && cp $E/synthetic_flagged.py $d/brainseg_utils/synthetic.py \
    && cp $E/transforms_flagged.py $d/brainseg_utils/transforms.py
  (cd $d && BRAINSEG_SYN_FLAGS=$flags BRAINSEG_AUG=$aug PYTHONPATH=$d:/tmp/site timeout ${VTIMEOUT:-420} \
     python3 benchmarks/bench_transfer.py --out /tmp/res/$name.json --work /tmp/w_$name --realanatomy /tmp/real \
     --threads 1 --label "$name: generator $flags, augmentation $aug $*" "$@" > /tmp/res/$name.log 2>&1)
  echo "== $name rc=$? t=$(( $(date +%s) - t0 ))s $(grep -E 'mean Dice|generation' /tmp/res/$name.log | tr -s ' ' | tr '\n' '|')"
}
while read -r name flags aug extra; do
  [ -z "$name" ] && continue
  run_variant "$name" "$flags" "$aug" $extra &
done < $E/${VARIANTS:-variants.txt}
wait
tar czf $OUT/res.tgz -C /tmp res
echo "total $(( $(date +%s) - t0 )) s"
