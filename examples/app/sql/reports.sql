-- Monthly sales, as the reporting job runs it.
SELECT strftime('%Y-%m', InvoiceDate) AS month, sum(Total) AS total
FROM Invoice
GROUP BY month
ORDER BY month;

/* genres with their track counts */
SELECT g.Name, count(*) FROM Genre g JOIN Track t ON t.GenreId = g.GenreId GROUP BY g.GenreId;

PRAGMA foreign_keys = ON;
