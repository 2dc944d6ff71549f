"""The taggers' original implementations, the references the equivalence tests compare against."""
