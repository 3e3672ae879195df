"""Downloads CIFAR-10 (python version) and extracts its files into a folder.

Run from the repository root:

    python data/download_cifar10.py --data_path=data/cifar10

The folder then holds data_batch_1 .. data_batch_5, test_batch and
batches.meta, which is what --data_path of the CIFAR-10 entry points expects.
"""

import argparse
import os
import sys
from pathlib import Path

# The script lives in data/; make `src` importable wherever it is run from.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from src.cifar10 import data as cifar10_data  # noqa: E402
from src.errors import UserError  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="Download and extract CIFAR-10 (python version).")
    parser.add_argument("--data_path", default="data/cifar10",
                        help="folder to extract the batch files into")
    parser.add_argument("--url", default=cifar10_data.CIFAR10_URL,
                        help="archive to download")
    parser.add_argument("--md5", default=cifar10_data.CIFAR10_MD5,
                        help="expected md5 of the archive ('' to skip)")
    parser.add_argument("--force", action="store_true",
                        help="download even when the files are present")
    args = parser.parse_args(argv)
    try:
        present = [name for name in cifar10_data.DATA_FILES
                   if os.path.isfile(os.path.join(args.data_path, name))]
        if len(present) == len(cifar10_data.DATA_FILES) and not args.force:
            print(f"CIFAR-10 is already in {os.path.abspath(args.data_path)}"
                  " (pass --force to download it again)")
            return 0
        cifar10_data.download_cifar10(args.data_path, url=args.url,
                                      md5=args.md5 or None)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
