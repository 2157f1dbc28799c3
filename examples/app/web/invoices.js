// Invoice queries of the sample app (Node, better-sqlite3).
const db = require('better-sqlite3')('chinook.sqlite');

// "SELECT * FROM Invoice" in a comment is not a query
function yearly(year) {
  return db.prepare('SELECT strftime(\'%Y\', InvoiceDate) AS y, sum(Total) FROM Invoice WHERE strftime(\'%Y\', InvoiceDate) = ? GROUP BY y').all(String(year));
}

function recent(days) {
  const sql = `SELECT InvoiceId, Total
    FROM Invoice
    WHERE InvoiceDate > datetime('now', '-${days} days')`;
  return db.prepare(sql).all();
}

const re = /SELECT \d+/g;  // a regex, not SQL

function names() {
  return db.prepare("SELECT group_concat(Name, ', ') FROM Genre").get();
}
module.exports = { yearly, recent, names, re };
