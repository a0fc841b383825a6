"""`python -m studentz_corpus prepare|export|import|...`: the corpus pipeline's CLI (studentz_corpus/prepare.py)."""
import sys

from studentz_corpus.prepare import main

if __name__ == "__main__":
  sys.exit(main())
