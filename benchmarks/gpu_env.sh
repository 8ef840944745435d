# Source this at the start of every command on the lent GPU machine (offline, Python 3.12, its own torch):
#   source benchmarks/gpu_env.sh
# It installs the wheels carried in .whl/ (h5py, isal), .whl-video/ (PyAV), .whl-model/ (diffusers, peft, einops),
# .simwhl/ (MuJoCo, dm_control, gym-aloha), .whl-drone/ (MuJoCo, PyOpenGL, absl: the drone renders) or .whl-test/
# (pytest, for the CUDA-only tests) or .whl-ds/ (DeepSpeed, built with DS_BUILD_OPS=0: pip wheel --no-deps
# --no-build-isolation deepspeed, plus hjson, msgpack, ninja, py-cpuinfo), made by
# ../shared/gpu/pack-deps.sh --sim --video (split into folders so that a run carries only what it needs: the
# carried tree may not exceed 64 MiB),
# puts every kinema package's src/ on PYTHONPATH, and, when .gl/ is carried, unpacks the GL loaders for MuJoCo EGL.
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site \
    $(ls .whl/*.whl .whl-model/*.whl .whl-video/*.whl .simwhl/*.whl .whl-drone/*.whl .whl-test/*.whl .whl-ds/*.whl 2>/dev/null) >/dev/null 2>&1 || echo "gpu_env: wheel install failed" >&2
export PYTHONPATH=/tmp/site:$(ls -d "$PWD"/packages/*/src | paste -sd:)
export PYTHONUNBUFFERED=1
if [ -d .gl ]; then
    for f in .gl/*.deb; do dpkg -x "$f" /; done
    ldconfig
    export MUJOCO_GL=egl __EGL_VENDOR_LIBRARY_FILENAMES=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
fi
