"""Operations: explain a fan's story, and (later) maintenance of the warehouse."""
