module goref

go 1.19
