"""`python -m rpa`: what this installation of rpa holds: the library and
its kernel sets, and whether rpa.jax and rpa.torch were built (and why
not), as the package's build recorded it."""
import json
import os


def main():
    import rpa
    print(f"rpa {rpa.__version__}: library {rpa.library_path}")
    print(f"kernel sets: {', '.join(rpa.kernel_sets())} (in use: "
          f"{rpa.kernel_set()})")
    path = os.path.join(os.path.dirname(rpa.__file__), "_build_info.json")
    try:
        with open(path) as f:
            info = json.load(f)
    except (OSError, ValueError):
        info = {}
        print(f"no build record ({path}): not installed by python/setup.py")
    for part in ("jax", "torch"):
        rec = info.get(part)
        if rec is None:
            state = "no build record"
        elif rec.get("built"):
            state = "built" + (f" against torch {rec['torch_version']}"
                               if "torch_version" in rec else "")
        else:
            state = f"NOT BUILT: {rec.get('reason')}"
        print(f"rpa.{part}: {state}")


if __name__ == "__main__":
    main()
