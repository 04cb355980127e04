"""Write tiny random checkpoints of the real architectures (InternVL directory + Meta-format SAM2 .pt)."""
import argparse

from sa2va.tiny_models import make_tiny_models


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out_dir", help="directory to write tiny_internvl/ and tiny_sam2/ into")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for name, path in make_tiny_models(args.out_dir, seed=args.seed).items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()
