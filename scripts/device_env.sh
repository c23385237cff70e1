# Sourced by the GPU scripts (gpu_session.sh, gpu_check.sh, gpu_paper.sh) before their first Python import:
# installs the wheels the session carries (packages the device image lacks: scripts/device_image.txt,
# "carry") into $SITE and puts $SITE and the repository on PYTHONPATH.
#   WHEELS  folder of the carried wheels (default .whl; make them with scripts/rehearse_device.sh --wheels)
#   SITE    where they are installed (default /tmp/site; once per machine)
WHEELS=${WHEELS:-.whl}
SITE=${SITE:-/tmp/site}
if ls "$WHEELS"/*.whl >/dev/null 2>&1 && [ ! -f "$SITE/.energykit-carried" ]; then
  if python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$WHEELS"/*.whl; then
    touch "$SITE/.energykit-carried"
  else
    echo "device_env: installing the carried wheels of $WHEELS into $SITE failed" >&2
  fi
fi
export PYTHONPATH=$SITE:$PWD PYTHONUNBUFFERED=1
