"""Long-context methods: each wraps a frozen base model behind the `LongContextModel` contract."""
