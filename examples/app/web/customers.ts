// Customer queries (TypeScript, Neon serverless driver after the move).
import { neon } from '@neondatabase/serverless';

const sql = neon(process.env.DATABASE_URL!);

export async function byCountry(country: string) {
  return sql`SELECT CustomerId, FirstName || ' ' || LastName AS name FROM Customer WHERE Country = ${country} LIMIT -1`;
}

export const topSpenders = `
  SELECT c.CustomerId, max(c.SupportRepId, 3) AS rep
  FROM Customer c
  WHERE c.Email GLOB '*@gmail.com'
`;
