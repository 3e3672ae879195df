"""Penn Treebank recurrent-cell search (the reference's src/ptb)."""
