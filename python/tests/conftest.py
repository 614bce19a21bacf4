import os
import sys

# The references run on JAX's CPU backend; set before anything imports jax.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def pytest_report_header(config):
    import rpa
    lines = [f"rpa library: {rpa.library_path}",
             f"rpa kernel set: {rpa.kernel_set()} (of {rpa.kernel_sets()})"]
    try:
        import jax
        lines.append(f"jax {jax.__version__}, backend "
                     f"{jax.default_backend()}")
    except ImportError:
        lines.append("jax: not installed")
    return lines
