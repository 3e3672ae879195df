"""Downloads the Penn Treebank text files and builds the reference's ptb.pkl.

Run from the repository root:

    python data/download_ptb.py --data_dir=data/ptb

The folder then holds ptb.train.txt, ptb.valid.txt, ptb.test.txt and
ptb.pkl; --data_path of the PTB entry point takes the folder or the pickle.
"""

import argparse
import os
import sys
from pathlib import Path

# The script lives in data/; make `src` importable wherever it is run from.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from src.errors import UserError  # noqa: E402
from src.ptb import data as ptb_data  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="Download the PTB text files and build ptb.pkl.")
    parser.add_argument("--data_dir", default="data/ptb",
                        help="folder for the text files and ptb.pkl")
    parser.add_argument("--url", default=ptb_data.PTB_URL,
                        help="folder URL holding ptb.{train,valid,test}.txt")
    parser.add_argument("--skip_md5", action="store_true",
                        help="do not check the files' md5 (other mirrors)")
    parser.add_argument("--force", action="store_true",
                        help="download even when the files are present")
    args = parser.parse_args(argv)
    try:
        texts = [name for name in ptb_data.PTB_FILES.values()
                 if os.path.isfile(os.path.join(args.data_dir, name))]
        if len(texts) == len(ptb_data.PTB_FILES) and not args.force:
            print(f"PTB is already in {os.path.abspath(args.data_dir)} "
                  "(pass --force to download it again)")
        else:
            ptb_data.download_ptb(
                args.data_dir, url=args.url, force=args.force,
                md5=None if args.skip_md5 else ptb_data.PTB_MD5)
        # Builds (or checks) the cached ptb.pkl beside the text files.
        data = ptb_data.read_data(args.data_dir)
        ptb_data.print_sizes(data)
        print(f"vocab_size: {data.vocab_size}")
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
